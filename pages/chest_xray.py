import streamlit as st

from core.calibration import probability_note
from core.case_report import CaseReport
from core.classes import MANET_CLASSES, class_title
from core.errors import ChestReviewError
from core.io import check_upload_size, load_image
from core.phantoms import make_phantom
from core.viz import heat_overlay, mask_overlay, probability_figure
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
    cxr_pipeline,
    dicom_seg_button,
    guard_chest_xray,
    prefer_stored_model,
    preselect_worklist_source,
    registry,
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

UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"]

st.title("Chest X-ray")
st.caption(RESEARCH_ONLY)

preselect_worklist_source("cxr", "cxr_source")
source = st.radio("Case", case_sources("cxr"), horizontal=True, key="cxr_source")
study = demo = None
try:
    if source == "Upload a file":
        upload = st.file_uploader("Frontal chest radiograph: PNG, JPEG, BMP, TIFF or DICOM", type=UPLOAD_TYPES)
        if upload is not None:
            check_upload_size(upload.size)
            study = guard_chest_xray(load_image(upload.getvalue(), upload.name))
    elif source == REAL_DEMO:
        demo = choose_real_demo_case("cxr", key="cxr_demo_case")
        study = guard_chest_xray(load_image(demo.read_bytes(), demo.file))
    elif source == WORKLIST_SOURCE:  # de-identified, guarded when it was first reviewed
        study = worklist_study("cxr")
    else:  # SYNTHETIC_DEMO: the fallback, out of distribution for the models
        st.caption("Synthetic fallback: a generated phantom; the models were not trained on such images, so their answers on it mean little.")
        label = st.selectbox("Synthetic phantom (generated, not a patient)", MANET_CLASSES, format_func=class_title, key="phantom_label")
        seed = st.number_input("Phantom seed", min_value=0, max_value=9999, value=0, step=1)
        study = guard_chest_xray(make_phantom(label, seed=int(seed)).to_study())
except ChestReviewError as error:
    show_error(error)

if study is None:
    st.info("Upload an image or choose a demo case to start.")
    st.stop()

try:
    classifiers = {card.name: card for card in registry().cards("cxr-classification")}
    classifier = None
    if len(classifiers) > 1:
        prefer_stored_model("cxr", list(classifiers), key="classifier")
        classifier = st.selectbox("Classifier", list(classifiers), key="classifier",
                                  format_func=lambda name: f"{name} ({', '.join(map(class_title, classifiers[name].classes))})")
    result = analyse_once("cxr_results", (study.case_hash, classifier), lambda: cxr_pipeline(classifier).analyse(study, faithfulness=True),
                          "Segmenting the lungs, classifying, explaining…")
except ChestReviewError as error:
    show_error(error)
    st.stop()

if study.synthetic:
    st.warning("SYNTHETIC DEMO CASE — a generated phantom, not a patient image.", icon="🧪")
for warning in result.warnings:
    if not (study.synthetic and "Synthetic" in warning):
        st.warning(warning)

opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05)
shown = [("Image", study.pixels), ("Lung mask", mask_overlay(study.pixels, result.lung_mask, opacity))]
if result.gradcam is not None:
    shown.append((f"Grad-CAM: {class_title(result.predicted_label)}", heat_overlay(study.pixels, result.gradcam, opacity)))
if result.attention_map is not None:
    shown.append(("Mask-attention map (1/8 resolution)", heat_overlay(study.pixels, result.attention_map, opacity, cmap="viridis")))
panels = st.columns(4)
for panel, (caption, picture) in zip(panels, shown):
    panel.image(picture, caption=caption, clamp=True, width="stretch")
if result.gradcam is not None:
    show_faithfulness(panels[2], result.faithfulness)

left, right = st.columns([3, 2])
with left:
    st.subheader(f"Prediction: {class_title(result.predicted_label)}")
    if demo is not None:
        show_demo_truth(demo, result.predicted_label)
    st.plotly_chart(probability_figure(result.probabilities), width="stretch")
    show_probability_note(result.classifier)
with right:
    st.subheader("Lungs")
    st.metric("Lung area (share of the image)", f"{result.lung.area_fraction:.1%}")
    st.write(f"Right lung (image left): {result.lung.right_lung_fraction:.1%} · Left lung (image right): {result.lung.left_lung_fraction:.1%}")
    st.caption(
        f"Models: {result.segmenter.name} {result.segmenter.version}, {result.classifier.name} {result.classifier.version} "
        f"({result.backend}) · " + " · ".join(f"{k} {v:.0f} ms" for k, v in result.timings_ms.items())
    )
    with st.expander("Model cards"):
        for card in (result.segmenter, result.classifier):
            show_model_card(card)
    if study.metadata:
        with st.expander("Image information (identifiers removed)"):
            st.json(study.metadata)

show_stored_case("cxr", study.case_hash, result.classifier, result.probabilities)
review_form(study, result.classifier, result.probabilities, result.predicted_label, task="cxr",
            surface=RegionSurface(dict(shown), study.pixels.shape))
scores = result.faithfulness or {}
case_report_button(CaseReport(
    title="Chest X-ray", case_hash=study.case_hash, images=shown,
    probabilities={class_title(k): v for k, v in result.probabilities.items()}, probability_note=probability_note(result.classifier),
    quantities=[("Lung area (share of the image)", f"{result.lung.area_fraction:.1%}"),
                ("Right lung (image left)", f"{result.lung.right_lung_fraction:.1%}"),
                ("Left lung (image right)", f"{result.lung.left_lung_fraction:.1%}")]
    + ([("Grad-CAM deletion score", f"{scores['deletion_score']:+.3f}"), ("Grad-CAM in-lung share", f"{scores['in_lung_share']:.0%}")]
       if scores.get("deletion_score") is not None else []),
    models=[result.segmenter, result.classifier], warnings=result.warnings,
    region_frames=[(study.pixels.shape, None, None)]), task="cxr")
dicom_seg_button(study, result, task="cxr")
