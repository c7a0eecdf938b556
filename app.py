"""Chest imaging review: ``streamlit run app.py``. Pages live in ``pages/``; all logic in ``core``."""

import streamlit as st

st.set_page_config(page_title="Chest imaging review", page_icon="🫁", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon="🏠", default=True),
        st.Page("pages/chest_xray.py", title="Chest X-ray", icon="🩻", url_path="chest-xray"),
        st.Page("pages/review_log.py", title="Review log", icon="📋", url_path="review-log"),
        st.Page("pages/model_cards.py", title="Model cards", icon="📇", url_path="model-cards"),
    ]
)
st.sidebar.warning("Research use only. Not for clinical use.", icon="⚠️")
navigation.run()
