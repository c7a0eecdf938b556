"""Roles and what each may do. One table, read by the pages and the command line.

Usage::

    allowed(user, "export_all")              # -> bool
    require(user, "manage_users")            # raises PermissionDeniedError otherwise

``reviewer``: read everything the app shows (pages, review log, model cards), save reviews, export
their own reviews. ``admin``: all of that, plus manage users and export every review.
"""

from __future__ import annotations

from core.errors import AuthError
from core.reviews.schema import ROLES

REVIEWER, ADMIN = ROLES

PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({REVIEWER, ADMIN}),  # every page, the review log on screen
    "review": frozenset({REVIEWER, ADMIN}),  # save a review under one's own name
    "export_own": frozenset({REVIEWER, ADMIN}),  # CSV of one's own reviews
    "export_all": frozenset({ADMIN}),  # CSV of everyone's reviews
    "manage_users": frozenset({ADMIN}),  # create, disable, reset password, change role
}


class PermissionDeniedError(AuthError):
    """The signed-in user's role does not allow this action."""


def allowed(user, permission: str) -> bool:
    """Whether ``user`` (a ``core.auth.User``, or None when nobody is signed in) may do ``permission``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
    return user is not None and user.active and user.role in PERMISSIONS[permission]


def require(user, permission: str) -> None:
    """Raise ``PermissionDeniedError`` unless ``user`` may do ``permission``."""
    if not allowed(user, permission):
        roles = " or ".join(sorted(PERMISSIONS[permission]))
        raise PermissionDeniedError(f"This needs the {roles} role; ask an administrator if you need it.")
