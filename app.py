"""Chest imaging review: ``streamlit run app.py``. Pages live in ``pages/``; all logic in ``core``."""

import streamlit as st

from core.auth import allowed
from pages.sign_in import first_start, gate, signed_in_user

st.set_page_config(page_title="Chest imaging review", layout="wide")
first_start()  # no account yet: create the admin and print its one-time password to this server's log
user = signed_in_user()  # None: nobody (or an expired session); the form comes after st.navigation

# url paths are Streamlit's defaults from the file names (chest_xray, ct_slice, ct_volume, review_log,
# agreement, model_cards): keep them so, a page link then names the same page when Streamlit runs the page without this
# script (pages/app_frame.py).
# Every page starts with require_app_frame().
# Signed out, every page is declared (hidden) so the requested URL still names its page after signing in.
shows_users_page = user is None or allowed(user, "manage_users")  # the Users page: admins only
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
        *([st.Page("pages/users.py", title="Users")] if shows_users_page else []),
    ],
    position="sidebar" if user is not None else "hidden",
)
st.sidebar.warning("Research use only. Not for clinical use.")
# Widgets drawn after st.navigation keep their state across reruns (before it, their ids change with the page).
if gate(sidebar=True) is not None:  # else the sign-in (or new-password) form is all there is
    navigation.run()
