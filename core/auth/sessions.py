"""A signed-in session and when it ends: pure functions of the session and a clock.

Usage::

    policy = SessionPolicy.from_settings()        # $CHEST_SESSION_IDLE_MINUTES, $CHEST_SESSION_MAX_HOURS
    session = start_session(user, now)             # after UserStore.authenticate
    reason = session_expiry(session, now, policy)  # None, "idle" or "lifetime"
    if reason: sign out and show expiry_message(reason, policy)
    else: session = touched(session, now)          # every action moves the idle deadline

The caller owns the clock (``now`` is a timezone-aware datetime), so tests move time by hand. The
app keeps the ``Session`` in Streamlit's server-side session state, never in the browser; a reload
opens a new Streamlit session and so asks to sign in again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from core.errors import AuthError

IDLE = "idle"
LIFETIME = "lifetime"


@dataclass(frozen=True)
class Session:
    """Who is signed in, since when, and their last action. ``token``: random, 256 bits, names the session."""

    token: str
    username: str
    role: str
    started_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class SessionPolicy:
    """``idle``: longest pause between two actions; ``lifetime``: longest session, however active."""

    idle: timedelta = timedelta(minutes=60)
    lifetime: timedelta = timedelta(hours=12)

    @classmethod
    def from_settings(cls) -> SessionPolicy:
        from core.settings import session_idle_minutes, session_max_hours

        return cls(idle=timedelta(minutes=session_idle_minutes()), lifetime=timedelta(hours=session_max_hours()))


def _aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise AuthError("The session clock must give a timezone-aware time.")
    return now


def start_session(user, now: datetime) -> Session:
    """A new session for ``user`` (a ``core.auth.User``) that has just signed in."""
    now = _aware(now)
    return Session(token=secrets.token_urlsafe(32), username=user.username, role=user.role,
                   started_at=now, last_seen_at=now)


def session_expiry(session: Session, now: datetime, policy: SessionPolicy) -> str | None:
    """Why ``session`` has ended at ``now``: ``"lifetime"``, ``"idle"``, or None while it is valid."""
    now = _aware(now)
    if now - session.started_at >= policy.lifetime:
        return LIFETIME
    if now - session.last_seen_at >= policy.idle:
        return IDLE
    return None


def touched(session: Session, now: datetime) -> Session:
    """The session after an action at ``now`` (a clock that went back leaves it as it was)."""
    now = _aware(now)
    return replace(session, last_seen_at=max(session.last_seen_at, now))


def expiry_message(reason: str, policy: SessionPolicy) -> str:
    """The sentence shown on the sign-in form after a session ended."""
    if reason == LIFETIME:
        return f"Your session ended after {_duration(policy.lifetime)}; please sign in again."
    return f"You were signed out after {_duration(policy.idle)} without activity; please sign in again."


def _duration(span: timedelta) -> str:
    minutes = round(span.total_seconds() / 60)
    if minutes % 60 == 0 and minutes >= 60:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
