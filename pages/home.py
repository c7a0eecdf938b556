import streamlit as st

from core.errors import ChestReviewError
from core.runtime import compute_description
from pages.app_frame import require_app_frame
from pages.common import RESEARCH_ONLY, registry, show_error

require_app_frame()  # first statement of every page: its link works as a server's first request

st.title("Chest imaging review")
st.error(RESEARCH_ONLY, icon="⚠️")
st.markdown(
    """
Upload a frontal chest X-ray (PNG, JPEG, BMP, TIFF or DICOM) or open a synthetic demo case on the
**Chest X-ray** page. You will see the image, the predicted lung mask, the classifier's attention
(Grad-CAM and the mask-attention map) and the probabilities of five classes: normal, COVID-19,
tuberculosis, bacterial pneumonia and viral pneumonia. Then record whether you agree, the label you
believe is right and where the model went wrong; every review is kept in the **Review log**.

Upload one axial chest CT slice (a CT DICOM in Hounsfield units, or a PNG/JPEG exported with a lung
window) or open a synthetic CT phantom on the **CT slice** page. You will see the slice in a window of
your choice, the lung mask, the infection (ground glass and consolidation in two colours), the
classifier's heat map with its crop box and the infected-region boxes, P(COVID-19) and the infection
burden as a share of the lungs, and review it the same way.

Upload a chest CT volume (one NIfTI file, the DICOM files of one series or one .zip of them) or open a
synthetic CT volume on the **CT volume** page. You will scroll through it in three orthogonal views
(axial, coronal, sagittal, at the true proportions of the voxels) with window presets and overlays of
the lungs, the infection and the 3D classifier's attention map; beside them the volumes of the right
and left lung and of the infection in ml, the infection/lung ratio with its size group, and P(COVID-19)
vs P(community-acquired pneumonia) from the uniform-sampling and size-balanced models and their
dual-sampling fusion. Your review can record the slice where the model went wrong.

Every upload is checked before any model sees it: its DICOM tags, its pixel values and an image-kind
model (chest radiograph, axial CT slice or something else) must fit the page; a volume must be CT in
Hounsfield units, with enough slices, one consistent series and enough lung in view.

Patient identifiers are removed when a file is read: names, IDs, dates, institutions and UIDs are never
shown, logged or stored. Reviews store a hash of the image pixels, not the image.
"""
)
TASK_GROUPS = {  # task -> the page heading it is listed under
    "lung-segmentation": "Chest X-ray", "cxr-classification": "Chest X-ray",
    "ct-lung-segmentation": "CT slice and CT volume", "ct-infection-segmentation": "CT slice and CT volume",
    "ct-classification": "CT slice", "ct-volume-classification": "CT volume",
    "image-kind": "Every page",
}
st.subheader("Loaded models")
try:
    cards = registry().cards()
except ChestReviewError as error:
    show_error(error)
else:
    for group in dict.fromkeys(TASK_GROUPS.values()):
        listed = [card for card in cards if TASK_GROUPS.get(card.task) == group]
        if listed:
            st.markdown(f"**{group}**\n\n" + "\n".join(
                f"- **{card.name}** {card.version} — {card.task}" + (" (synthetic test model)" if card.synthetic else "")
                for card in listed))
st.caption(f"Models run on: **{compute_description()}**")
