import streamlit as st

from core.calibration import probability_note
from core.case_report import CaseReport
from core.classes import class_title
from core.errors import ChestReviewError
from core.imaging.windowing import LUNG, PRESETS, Window, apply_window
from core.io import check_upload_size, load_image
from core.viz import (
    HEATMAP_BOX_COLOUR,
    SIDE_BOX_COLOURS,
    draw_box,
    heat_overlay,
    infection_overlay,
    mask_overlay,
    probability_figure,
)
from pages.app_frame import require_app_frame
from pages.common import (
    REAL_DEMO,
    RESEARCH_ONLY,
    WORKLIST_SOURCE,
    RegionSurface,
    analyse_once,
    case_report_button,
    case_sources,
    choose_real_demo_case,
    ct_slice_demo_study,
    ct_slice_pipeline,
    dicom_seg_button,
    guard_ct_slice,
    preselect_worklist_source,
    review_form,
    show_demo_truth,
    show_error,
    show_faithfulness,
    show_model_card,
    show_probability_note,
    show_stored_case,
    worklist_study,
)

require_app_frame()  # first statement of every page: its link works as a server's first request

UPLOAD_TYPES = ["dcm", "dicom", "png", "jpg", "jpeg"]
WINDOW_TITLES = {"lung": "Lung W1500/L-600 (the paper's [-1350, 150] HU)", "mediastinum": "Mediastinum W400/L40", "free": "Free window"}

st.title("CT slice")
st.caption(RESEARCH_ONLY)

preselect_worklist_source("ct-slice", "ct_source")
source = st.radio("Case", case_sources("ct-slice"), horizontal=True, key="ct_source")
study = demo = None
try:
    if source == "Upload a file":
        upload = st.file_uploader("One axial chest CT slice: DICOM (Hounsfield units) or a PNG/JPEG exported with a lung window",
                                  type=UPLOAD_TYPES, key="ct_upload")
        if upload is not None:
            check_upload_size(upload.size)
            study = guard_ct_slice(load_image(upload.getvalue(), upload.name))
    elif source == REAL_DEMO:
        demo = choose_real_demo_case("ct-slice", key="ct_demo_case")
        study = guard_ct_slice(load_image(demo.read_bytes(), demo.file))
    elif source == WORKLIST_SOURCE:  # de-identified, guarded when it was first reviewed
        study = worklist_study("ct-slice")
    else:  # the synthetic fallback, out of distribution for the models
        st.caption("Synthetic fallback: a generated phantom; the models were not trained on such images, so their answers on it mean little.")
        label = st.selectbox("Synthetic phantom (generated, not a patient)", ["covid", "non-covid"], format_func=class_title, key="ct_phantom_label")
        seed = st.number_input("Phantom seed", min_value=0, max_value=9999, value=0, step=1, key="ct_phantom_seed")
        study = ct_slice_demo_study(label, int(seed))
except ChestReviewError as error:
    show_error(error)

if study is None:
    st.info("Upload a CT slice or choose a demo case to start. Whole series and volumes go to the CT volume page.")
    st.stop()

try:
    result = analyse_once("ct_slice_results", study.case_hash, lambda: ct_slice_pipeline().analyse(study, faithfulness=True),
                          "Segmenting the lungs and the infection, classifying…")
except ChestReviewError as error:
    show_error(error)
    st.stop()

if study.synthetic:
    st.warning("SYNTHETIC DEMO CASE — a generated phantom, not a patient image.", icon="🧪")
for warning in result.warnings:
    if not (study.synthetic and "Synthetic" in warning):  # already said by the banner above
        st.warning(warning)

controls = st.columns([2, 1, 1, 2])
if study.hu is not None:
    choice = controls[0].selectbox("Window", [*PRESETS, "free"], format_func=WINDOW_TITLES.get, key="ct_window")
    if choice == "free":
        level = controls[1].number_input("Level (HU)", -1200, 3000, LUNG.level, step=10, key="ct_level")
        width = controls[2].number_input("Width (HU)", 1, 4000, LUNG.width, step=10, key="ct_width")
        window = Window("free", float(level), float(width))
    else:
        window = PRESETS[choice]
    shown = apply_window(study.hu, window)
else:
    controls[0].info("No Hounsfield units in this file (an 8-bit export): shown as exported; windowing is not available.")
    shown = study.pixels
opacity = controls[3].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="ct_opacity")

pictures = [("Slice", shown), ("Lung mask", mask_overlay(shown, result.lung_mask, opacity)),
            ("Infection: ground glass (amber), consolidation (red)" if result.burden.ggo_fraction is not None
             else "Infection (ground glass / consolidation split unavailable)",
             infection_overlay(shown, result.infection_labels, opacity))]
if result.heatmap is not None:
    picture = draw_box(heat_overlay(shown, result.heatmap, opacity), result.heatmap_box, HEATMAP_BOX_COLOUR)
    for side, box in result.infected_boxes.items():
        picture = draw_box(picture, box, SIDE_BOX_COLOURS[side])
    pictures.append(("Heat map (Eq. 1); white: heat-map crop, green: right / magenta: left infected region", picture))
panels = st.columns(4)
for panel, (caption, picture) in zip(panels, pictures):
    panel.image(picture, caption=caption, clamp=True, width="stretch")
if result.heatmap is not None:
    show_faithfulness(panels[3], result.faithfulness)

left, right = st.columns([3, 2])
with left:
    if result.probabilities:
        st.subheader(f"P(COVID-19): {result.prob_covid:.1%}")
        if demo is not None:
            show_demo_truth(demo, result.predicted_label)
        st.plotly_chart(probability_figure(result.probabilities), width="stretch")
        show_probability_note(result.cards["classifier"])
        st.caption("Branches (P(COVID-19), each branch's own sigmoid, no temperature): "
                   + " · ".join(f"{k} {v:.1%}" for k, v in result.branch_probabilities.items()))
with right:
    burden = result.burden
    st.subheader("Infection burden")
    st.metric("Infected lung", f"{burden.infection_fraction:.1%}", help="infected area / lung area on this slice")
    if burden.ggo_fraction is not None:
        st.write(f"Ground glass: {burden.ggo_fraction:.1%} of the lung · consolidation: {burden.consolidation_fraction:.1%}")
    st.write(f"Lung area: {burden.lung_area_fraction:.1%} of the slice")
    st.caption(" · ".join(f"{card.name} {card.version}" for card in result.cards.values()) + f" ({result.backend}) · "
               + " · ".join(f"{k} {v:.0f} ms" for k, v in result.timings_ms.items()))
    with st.expander("Model cards"):
        for card in result.cards.values():
            show_model_card(card)
    if study.metadata:
        with st.expander("Image information (identifiers removed)"):
            st.json(study.metadata)

if result.probabilities:
    show_stored_case("ct-slice", study.case_hash, result.cards["classifier"], result.probabilities)
    review_form(study, result.cards["classifier"], result.probabilities, result.predicted_label, task="ct-slice",
                surface=RegionSurface(dict(pictures), study.pixels.shape))
else:
    st.info("No CT classifier is installed, so there is no prediction to review.")
burden, scores = result.burden, result.faithfulness or {}
quantities = [("Infected lung (infected area / lung area)", f"{burden.infection_fraction:.1%}"),
              ("Lung area (share of the slice)", f"{burden.lung_area_fraction:.1%}")]
if burden.ggo_fraction is not None:
    quantities += [("Ground glass (share of the lung)", f"{burden.ggo_fraction:.1%}"),
                   ("Consolidation (share of the lung)", f"{burden.consolidation_fraction:.1%}")]
if scores.get("deletion_score") is not None:
    quantities += [("Heat-map deletion score", f"{scores['deletion_score']:+.3f}"),
                   ("Heat-map in-lung share", f"{scores['in_lung_share']:.0%}")]
case_report_button(CaseReport(
    title="CT slice", case_hash=study.case_hash, images=pictures,
    probabilities={class_title(k): v for k, v in result.probabilities.items()},
    probability_note=probability_note(result.cards["classifier"]) if "classifier" in result.cards else "",
    quantities=quantities, models=list(result.cards.values()), warnings=result.warnings,
    region_frames=[(study.pixels.shape, None, None)]), task="ct-slice")
dicom_seg_button(study, result, task="ct-slice")
