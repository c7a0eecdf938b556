"""The sign-in gate: the form, the forced password change, the sidebar's account box. Layout only; logic in core.auth.

Not a page of its own: ``app.py`` calls ``gate(sidebar=True)`` before ``st.navigation``'s page runs
(after ``st.navigation`` itself: widgets drawn before it lose their values on the next rerun),
and ``pages.app_frame.require_app_frame`` calls ``gate(sidebar=False)`` at the top of every page, so
a page run by any other route (Streamlit's ``pages/`` mode, a test harness) is protected as well.
An unauthenticated visitor sees the sign-in form and nothing else of the page.
"""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from core.errors import ChestReviewError
from pages.common import (
    SESSION_KEY,
    SIGN_OUT_NOTICE_KEY,
    _user_store,
    current_user,
    show_error,
    sign_out,
    user_store,
)


@st.cache_resource(show_spinner=False)
def _first_start(url: str) -> bool:
    from core.auth import ensure_first_admin

    return ensure_first_admin(_user_store(url))  # prints the one-time password to the server's stdout


def first_start() -> None:
    """Once per server process: with no account at all, create the admin and print its password to the log."""
    from core.settings import review_db_url

    try:
        _first_start(review_db_url())
    except ChestReviewError as error:  # not cached: the next run tries again
        show_error(error)


def signed_in_user():
    """``current_user()`` without drawing anything (None also when the accounts cannot be read)."""
    try:
        return current_user()
    except ChestReviewError:
        return None  # gate() shows the error


def gate(*, sidebar: bool):
    """The signed-in user allowed to see pages, or None after drawing what they must do first.

    None: the sign-in form (nobody signed in) or the new-password form (a password someone else set).
    ``sidebar``: also draw who is signed in and the sign-out button (app.py does; pages do not).
    """
    try:
        user = current_user()
    except ChestReviewError as error:
        show_error(error)
        return None
    if user is None:
        sign_in_form()
        return None
    if user.must_change_password:
        change_password_form(user)
        return None
    if sidebar:
        account_sidebar(user)
    return user


def sign_in_form() -> None:
    from core.auth import start_session

    st.title("Sign in")
    notice = st.session_state.pop(SIGN_OUT_NOTICE_KEY, None)
    if notice:
        st.info(notice)
    with st.form("sign_in", clear_on_submit=True):  # the typed password does not stay in the session
        username = st.text_input("Username", key="sign_in_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="sign_in_password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in")
    st.caption("No account? Ask an administrator of this app.")
    if not submitted:
        return
    try:
        user = user_store().authenticate(username, password)
    except ChestReviewError as error:
        show_error(error)
        return
    st.session_state[SESSION_KEY] = start_session(user, datetime.now(timezone.utc))
    st.rerun()  # the same URL again, now signed in: the page the visitor asked for


def change_password_form(user) -> None:
    """A password chosen by someone else (first start, an admin's reset) is replaced before anything else."""
    from core.auth import PASSWORD_MIN

    st.title("Choose a new password")
    st.info(f"Signed in as **{user.username}** with a password someone else set. Choose your own "
            f"(at least {PASSWORD_MIN} characters) to continue.")
    with st.form("change_password", clear_on_submit=True):
        current = st.text_input("Current password", type="password", key="change_current")
        new = st.text_input("New password", type="password", key="change_new", autocomplete="new-password")
        again = st.text_input("New password again", type="password", key="change_again", autocomplete="new-password")
        submitted = st.form_submit_button("Set password")
    if st.button("Sign out", key="change_sign_out"):
        sign_out()
        st.rerun()
    if not submitted:
        return
    if new != again:
        st.error("The two new passwords differ.", icon="🚫")
        return
    try:
        user_store().change_password(user.username, current, new)
    except ChestReviewError as error:
        show_error(error)
        return
    st.rerun()


def account_sidebar(user) -> None:
    """Who is signed in, their role, and the sign-out button."""
    st.sidebar.markdown(f"Signed in as **{user.username}** ({user.role})")
    if st.sidebar.button("Sign out", key="sign_out"):
        sign_out("You signed out.")
        st.rerun()
