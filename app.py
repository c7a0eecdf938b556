"""Chest imaging review: ``streamlit run app.py``. Pages live in ``pages/``; all logic in ``core``."""

import streamlit as st

st.set_page_config(page_title="Chest imaging review", layout="wide")

# url paths are Streamlit's defaults from the file names (chest_xray, ct_slice, ct_volume, review_log,
# agreement, model_cards): keep them so, a page link then names the same page when Streamlit runs the page without this
# script (pages/app_frame.py).
# Every page starts with require_app_frame().
navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", default=True),
        st.Page("pages/chest_xray.py", title="Chest X-ray"),
        st.Page("pages/ct_slice.py", title="CT slice"),
        st.Page("pages/ct_volume.py", title="CT volume"),
        st.Page("pages/review_log.py", title="Review log"),
        st.Page("pages/agreement.py", title="Agreement"),
        st.Page("pages/worklist.py", title="Worklist"),
        st.Page("pages/model_cards.py", title="Model cards"),
    ]
)
st.sidebar.warning("Research use only. Not for clinical use.")
navigation.run()
