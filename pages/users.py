"""Users page (admins only): add accounts, disable or enable them, reset passwords, change roles.

Layout only; the rules (username and password checks, the last active admin) are in ``core.auth``.
Listed in app.py's navigation for admins only; opened by its URL by anyone else, it says so and stops.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.auth import PASSWORD_MIN, ROLES, allowed
from core.errors import ChestReviewError
from pages.app_frame import require_app_frame
from pages.common import current_user, show_error, user_store

require_app_frame()  # first statement of every page: its link works as a server's first request


def _when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


def _table(users) -> pd.DataFrame:
    return pd.DataFrame([{
        "Username": u.username, "Role": u.role, "Active": u.active,
        "Must change password": u.must_change_password,
        "Created (UTC)": _when(u.created_at), "Last sign-in (UTC)": _when(u.last_login_at),
    } for u in users])


def _add_user() -> None:
    with st.form("users_add", clear_on_submit=True):
        st.markdown("**Add a user**")
        c0, c1, c2 = st.columns(3)
        username = c0.text_input("Username", key="users_new_name",
                                 help="Letters, digits, dots, hyphens, underscores; saved in lower case")
        role = c1.selectbox("Role", ROLES, key="users_new_role")
        password = c2.text_input("Temporary password", type="password", key="users_new_password",
                                 help=f"At least {PASSWORD_MIN} characters; the user chooses their own at first sign-in")
        submitted = st.form_submit_button("Add user")
    if submitted:
        try:
            created = user_store().create_user(username, password, role, must_change_password=True)
        except ChestReviewError as error:
            show_error(error)
        else:
            st.success(f"Added {created.role} **{created.username}**. Give them the temporary password in person.")


def _manage(users, me) -> None:
    by_name = {u.username: u for u in users}
    name = st.selectbox("Manage a user", list(by_name), index=None, placeholder="Choose a user", key="users_manage")
    if name is None:
        return
    chosen, store = by_name[name], user_store()
    c0, c1 = st.columns(2)
    try:
        if chosen.active and c0.button(f"Disable {name}", key="users_disable", disabled=name == me.username,
                                       help="Cannot sign in any more; their reviews stay"):
            store.disable_user(name)
            st.rerun()
        if not chosen.active and c0.button(f"Enable {name}", key="users_enable"):
            store.enable_user(name)
            st.rerun()
        role = c1.selectbox("Role", ROLES, index=ROLES.index(chosen.role), key="users_role")
        if role != chosen.role and c1.button(f"Make {name} {role}", key="users_set_role"):
            store.set_role(name, role)
            st.rerun()
    except ChestReviewError as error:
        show_error(error)
    with st.form("users_reset", clear_on_submit=True):
        password = st.text_input(f"New temporary password for {name}", type="password", key="users_reset_password")
        if st.form_submit_button("Reset password"):
            try:
                store.reset_password(name, password)
            except ChestReviewError as error:
                show_error(error)
            else:
                st.success(f"Password reset; {name} chooses a new one at the next sign-in (any lockout is lifted).")


def render() -> None:
    st.title("Users")
    me = current_user()
    if not allowed(me, "manage_users"):
        st.error("Only administrators can manage users.", icon="🚫")
        return
    try:
        users = user_store().users()
    except ChestReviewError as error:
        show_error(error)
        return
    st.dataframe(_table(users), hide_index=True, width="stretch")
    _add_user()
    _manage(users, me)
    st.caption("Accounts are never deleted (reviews name them): disable one instead. Every review, of every "
               "reviewer, is exported from the Review log page. Command line: `python -m core.auth --help`.")


render()
