"""Logins and roles: who may use the app, and as whom their reviews are saved. No Streamlit.

Public API::

    from core.auth import UserStore, User, Session, SessionPolicy, allowed, require

    store = UserStore(core.settings.review_db_url())     # the review log's database (tables users, login_attempts)
    store.create_user(username, password, role="reviewer", *, must_change_password=False) -> User
    store.authenticate(username, password) -> User        # AuthenticationError, AccountLockedError
    store.disable_user / enable_user / set_role / reset_password / change_password / users / active_user
    ensure_first_admin(store) -> bool                     # first start: admin + random password printed to stdout

    session = start_session(user, now)                    # pure functions, the caller's clock
    session_expiry(session, now, SessionPolicy.from_settings()) -> None | "idle" | "lifetime"
    session = touched(session, now)

    allowed(user, "export_all") -> bool; require(user, "manage_users")   # roles: reviewer, admin

Command line: ``python -m core.auth create-admin --username NAME`` (password from a prompt, or
``--password-stdin``), ``add-user``, ``disable-user``, ``enable-user``, ``reset-password``,
``set-role``, ``list-users``; see ``core/auth/__main__.py``.

Errors are ``core.errors.AuthError`` subclasses with messages for the user; see ``core.auth.users``.
"""

from core.auth.roles import ADMIN, PERMISSIONS, REVIEWER, PermissionDeniedError, allowed, require
from core.auth.sessions import (
    IDLE,
    LIFETIME,
    Session,
    SessionPolicy,
    expiry_message,
    session_expiry,
    start_session,
    touched,
)
from core.auth.users import (
    FIRST_ADMIN,
    PASSWORD_MIN,
    WRONG_CREDENTIALS,
    AccountLockedError,
    AuthenticationError,
    AuthStorageError,
    LastAdminError,
    LockoutPolicy,
    User,
    UserExistsError,
    UserNotFoundError,
    UserStore,
    UserValidationError,
    ensure_first_admin,
    locked_until,
    username_key,
)
from core.errors import AuthError
from core.reviews.schema import ROLES

__all__ = [
    "ADMIN", "FIRST_ADMIN", "IDLE", "LIFETIME", "PASSWORD_MIN", "PERMISSIONS", "REVIEWER", "ROLES",
    "WRONG_CREDENTIALS", "AccountLockedError", "AuthError", "AuthStorageError", "AuthenticationError",
    "LastAdminError", "LockoutPolicy", "PermissionDeniedError", "Session", "SessionPolicy", "User",
    "UserExistsError", "UserNotFoundError", "UserStore", "UserValidationError", "allowed",
    "ensure_first_admin", "expiry_message", "locked_until", "require", "session_expiry", "start_session",
    "touched", "username_key",
]
