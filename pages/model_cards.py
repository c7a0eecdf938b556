import streamlit as st

from core.errors import ChestReviewError
from pages.app_frame import require_app_frame
from pages.common import RESEARCH_ONLY, registry, show_error, show_model_card

require_app_frame()  # first statement of every page: its link works as a server's first request

st.title("Model cards")
st.caption(RESEARCH_ONLY)
try:
    cards = registry().cards()
except ChestReviewError as error:
    show_error(error)
    st.stop()
for card in cards:
    with st.expander(f"{card.name} {card.version} — {card.task}", expanded=True):
        show_model_card(card, heading=False)
