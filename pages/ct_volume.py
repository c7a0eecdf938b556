import streamlit as st

from core.calibration import probability_note
from core.case_report import CaseReport
from core.classes import class_title
from core.ct_volume_phantoms import DEMO_CASES
from core.errors import ChestReviewError
from core.imaging.infection_burden import BAND_TITLES
from core.imaging.volume_views import ORIENTATION, VIEWS, Overlays, middle_slices, render_view, slice_count, view_slice
from core.imaging.windowing import LUNG, PRESETS, Window
from core.io.series import MAX_SERIES_BYTES
from core.model_card import card_markdown
from core.pipelines.ct_volume import NO_CLASSIFIER_WARNING, SAMPLINGS, STAGE_TITLES
from core.reviews.reviewed_model import reviewed_model
from core.viz import probability_figure
from pages.app_frame import require_app_frame
from pages.common import (
    RESEARCH_ONLY,
    WORKLIST_SOURCE,
    RegionSurface,
    analyse_once,
    case_report_button,
    ct_volume_demo,
    ct_volume_pipeline,
    dicom_seg_button,
    preselect_worklist_source,
    review_form,
    show_error,
    show_stored_case,
    uploaded_ct_volume,
    worklist_sources,
    worklist_volume,
)

require_app_frame()  # first statement of every page: its link works as a server's first request

WINDOW_TITLES = {"lung": "Lung W1500/L-600 (the paper's [-1350, 150] HU)", "mediastinum": "Mediastinum W400/L40", "free": "Free window"}
SLIDER_TITLES = {"axial": "Axial slice (0 = feet)", "coronal": "Coronal slice (0 = front)", "sagittal": "Sagittal slice (0 = patient's right)"}
MODEL_TITLES = {"uniform": "Uniform sampling", "size-balanced": "Size-balanced sampling", "dual": "Dual-sampling fusion"}
DEMO_TITLES = {stem: f"{class_title(label)}-like, infection/lung {ratio:g} (seed {seed})" for stem, label, seed, ratio in DEMO_CASES}

st.title("CT volume")
st.caption(RESEARCH_ONLY)

preselect_worklist_source("ct-volume", "cv_source")
source = st.radio("Case", ["Upload a volume", "Synthetic demo volume", *worklist_sources("ct-volume")], horizontal=True,
                  key="cv_source")
opened = None
try:
    if source == "Upload a volume":
        uploads = st.file_uploader(
            "A chest CT volume: one NIfTI file (.nii, .nii.gz), the DICOM files of one series, or one .zip of them",
            accept_multiple_files=True, key="cv_upload",  # any name: DICOM files often have none; content decides
            max_upload_size=MAX_SERIES_BYTES // 2**20)  # a .nii.gz or zip of one series; the loader checks the total
        if uploads:
            opened = uploaded_ct_volume(uploads)
    elif source == WORKLIST_SOURCE:
        opened = worklist_volume()
    else:
        stem = st.selectbox("Synthetic volume (generated, not a patient)", list(DEMO_TITLES), format_func=DEMO_TITLES.get,
                            key="cv_demo")
        opened = ct_volume_demo(stem)
except ChestReviewError as error:
    show_error(error)

if opened is None:
    st.info("Upload a chest CT volume or choose a synthetic demo volume to start. Single slices go to the CT slice page.")
    st.stop()

volume = opened.volume
try:
    result = analyse_once("ct_volume_results", opened.case_hash,
                          lambda progress: ct_volume_pipeline().analyse(volume, progress=progress),
                          "Analysing the volume…", stages=STAGE_TITLES)
except ChestReviewError as error:
    show_error(error)
    st.stop()

if volume.synthetic:
    st.warning("SYNTHETIC DEMO VOLUME — a generated phantom, not a patient scan.", icon="🧪")
classifiers = [result.cards[sampling] for sampling in SAMPLINGS if sampling in result.model_probabilities]
if any(card.synthetic for card in classifiers):
    st.warning("The COVID-19 / CAP classifiers were trained on synthetic volumes only (no labelled real CT volumes "
               "were available): their probabilities show how the method works, not what a real scan holds.", icon="🧪")
for warning in dict.fromkeys(result.warnings):  # the volume's own warnings are among them
    if warning != NO_CLASSIFIER_WARNING and not (volume.synthetic and "ynthetic" in warning):  # said elsewhere
        st.warning(warning)

# --- display controls (the views are redrawn from the kept result: no model runs again)
if st.session_state.get("cv_case") != opened.case_hash:  # a new case opens on its middle slices
    st.session_state["cv_case"] = opened.case_hash
    for view in VIEWS:
        st.session_state.pop(f"cv_{view}", None)
controls = st.columns([2, 1, 1, 2, 2])
choice = controls[0].selectbox("Window", [*PRESETS, "free"], format_func=WINDOW_TITLES.get, key="cv_window")
if choice == "free":
    level = controls[1].number_input("Level (HU)", -1200, 3000, LUNG.level, step=10, key="cv_level")
    width = controls[2].number_input("Width (HU)", 1, 4000, LUNG.width, step=10, key="cv_width")
    window = Window("free", float(level), float(width))
else:
    window = PRESETS[choice]
opacity = controls[3].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="cv_opacity")
attention_maps = {"none": "No attention map", **{name: f"Attention: {MODEL_TITLES.get(name, name)}" for name in result.attention}}
attention = controls[4].selectbox("Attention map", list(attention_maps), format_func=attention_maps.get, key="cv_attention",
                                  disabled=not result.attention, help=None if result.attention else "No 3D classifier is installed.")
toggles = st.columns(4)
show_lungs = toggles[0].toggle("Lungs", value=True, key="cv_show_lungs")
show_infection = toggles[1].toggle("Infection", value=True, key="cv_show_infection")
show_cursor = toggles[2].toggle("Slice lines", value=True, key="cv_show_cursor")
overlays = Overlays(lungs=result.lung_mask if show_lungs else None,
                    infection=result.infection_labels if show_infection else None,
                    attention=result.attention.get(attention), opacity=opacity)

views, facts = st.columns([5, 2])
middle = middle_slices(volume.hu.shape)
with views:
    positions = {view: column.slider(SLIDER_TITLES[view], 0, slice_count(volume.hu.shape, view) - 1, middle[view],
                                     key=f"cv_{view}")
                 for view, column in zip(VIEWS, st.columns(3))}
    pictures = []
    for view, column in zip(VIEWS, st.columns(3)):
        top, _bottom, left, _right = ORIENTATION[view]
        pictures.append((f"{view.capitalize()} {positions[view]} — top: {top}, left: {left}",
                         render_view(volume.hu, volume.spacing_mm, view, positions[view], window, overlays,
                                     cursor=positions if show_cursor else None)))
        column.image(pictures[-1][1], caption=pictures[-1][0], width="stretch")
    dz, dy, dx = volume.spacing_mm
    st.caption("Lungs: cyan outline · ground glass: amber · consolidation: red · attention: heat colours · "
               "dotted yellow lines: where the other two views cut.  "
               f"{' x '.join(str(n) for n in volume.hu.shape)} voxels (z, y, x) of {dz:.2f} x {dy:.2f} x {dx:.2f} mm, "
               "shown at their true proportions.")

with facts:
    st.subheader("Lungs and infection")
    lungs, infection = result.lung_volume_ml, result.infection_volume_ml
    first, second = st.columns(2)
    first.metric("Right lung", f"{lungs['right']:.0f} ml")
    second.metric("Left lung", f"{lungs['left']:.0f} ml")
    first.metric("Infection", f"{infection['total']:.1f} ml")
    second.metric("Infection / lung", f"{result.infection_ratio:.4f}", help="infected volume / lung volume (paper 004)")
    if "ggo" in infection:
        st.write(f"Ground glass: {infection['ggo']:.1f} ml · consolidation: {infection['consolidation']:.1f} ml")
    else:
        st.caption("No ground glass / consolidation model is installed: the infection is not split.")
    st.write(f"Size group: **{result.ratio_band}** ({BAND_TITLES[result.ratio_band]}, the bands of the paper's Table III)")

st.divider()
left, right = st.columns([3, 2])
with left:
    if result.probabilities:
        st.subheader(f"P(COVID-19): {result.probabilities['covid']:.1%} (dual sampling)")
        st.plotly_chart(probability_figure(result.probabilities), width="stretch")
        st.table({"Model": [MODEL_TITLES.get(name, name) for name in result.model_probabilities],
                  "P(COVID-19)": [f"{p:.1%}" for p in result.model_probabilities.values()],
                  "P(CAP)": [f"{1 - p:.1%}" for p in result.model_probabilities.values()]})
        if result.fusion_weight is not None:
            st.caption(f"Fusion: P = w·P(uniform) + (1 − w)·P(size-balanced) with w = {result.fusion_weight:.2f} "
                       "(0.96 for an infection/lung ratio in [0.001, 0.030], else 0.35).")
        for sampling in [s for s in SAMPLINGS if s in result.model_probabilities]:
            st.caption(f"{MODEL_TITLES.get(sampling, sampling)}: {probability_note(result.cards[sampling])}.")
    else:
        st.info("No 3D COVID-19 / CAP classifier is installed: this page shows the segmentation only (lungs, infection "
                "and their volumes). The dual-sampling recipe trains and exports one (see the README).")
with right:
    st.caption(" · ".join(f"{card.name} {card.version}" for card in result.cards.values()) + f" ({result.backend}) · "
               + " · ".join(f"{k} {v / 1000:.1f} s" for k, v in result.timings_ms.items()))
    with st.expander("Model cards"):
        for card in result.cards.values():
            st.markdown(f"#### {card.name} {card.version}\n\n" + card_markdown(card))
    with st.expander("Volume information (identifiers removed)"):
        st.json({"format": volume.file_format, "voxels (z, y, x)": list(volume.hu.shape),
                 "spacing (mm, z y x)": list(volume.spacing_mm), **volume.metadata})

if result.probabilities:
    draw_view = st.selectbox("Draw regions on the", VIEWS, key="cv_draw_view",
                             format_func=lambda view: f"{view} view, slice {positions[view]} (move its slider to change)",
                             help="A review's regions lie on one slice: moving that slider starts a new drawing.")
    surface = RegionSurface({pictures[VIEWS.index(draw_view)][0]: pictures[VIEWS.index(draw_view)][1]},
                            view_slice(volume.hu, draw_view, positions[draw_view]).shape,
                            slice_view=draw_view, slice_index=positions[draw_view])
    show_stored_case("ct-volume", opened.case_hash, reviewed_model(classifiers), result.probabilities)
    review_form(opened, reviewed_model(classifiers), result.probabilities, result.predicted_label, task="ct-volume",
                slices=positions, surface=surface)
else:
    st.info("Without a classifier there is no prediction to review.")
quantities = [("Right lung", f"{lungs['right']:.0f} ml"), ("Left lung", f"{lungs['left']:.0f} ml"),
              ("Infection", f"{infection['total']:.1f} ml"), ("Infection / lung", f"{result.infection_ratio:.4f}"),
              ("Size group (Table III)", result.ratio_band)]
quantities += [(f"P(COVID-19), {MODEL_TITLES.get(name, name)}", f"{p:.1%}") for name, p in result.model_probabilities.items()]
case_report_button(CaseReport(
    title="CT volume", case_hash=opened.case_hash, images=pictures,
    probabilities={class_title(k): v for k, v in result.probabilities.items()},
    probability_note="; ".join(f"{MODEL_TITLES.get(s, s)}: {probability_note(result.cards[s])}"
                               for s in SAMPLINGS if s in result.model_probabilities),
    quantities=quantities, models=list(result.cards.values()), warnings=result.warnings,
    region_frames=[(view_slice(volume.hu, view, positions[view]).shape, view, positions[view]) for view in VIEWS]),
    task="ct-volume")
dicom_seg_button(opened, result, task="ct-volume")
