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

Patient identifiers are removed when a file is read: names, IDs, dates, institutions and UIDs are never
shown, logged or stored. Reviews store a hash of the image pixels, not the image.
"""
)
st.subheader("Loaded models")
try:
    cards = registry().cards()
except ChestReviewError as error:
    show_error(error)
else:
    for card in cards:
        st.markdown(f"- **{card.name}** {card.version} — {card.task}" + (" (synthetic test model)" if card.synthetic else ""))
st.caption(f"Models run on: **{compute_description()}**")
