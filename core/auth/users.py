"""``UserStore``: accounts, argon2id password hashes and the sign-in lockout, in the review log's database.

Usage::

    store = UserStore(core.settings.review_db_url())    # or UserStore(review_store): same engine
    store.create_user("ann", "a long password", role="reviewer") -> User
    user = store.authenticate("ann", "a long password")  # AuthenticationError / AccountLockedError
    store.disable_user("ann"); store.enable_user("ann"); store.set_role("ann", "admin")
    store.reset_password("ann", "temporary password")   # by an admin: Ann must choose a new one
    store.change_password("ann", old, new)              # by Ann herself
    store.users() -> list[User]; store.active_user("ann") -> User | None
    store.create_first_admin() -> str | None              # a random password, only while no user exists

Usernames: 1-100 letters, digits, ``.``, ``-`` or ``_``, kept in lower case (``Ann`` and ``ann`` are
one account); a username is what reviews record as the reviewer. Passwords: at least
``PASSWORD_MIN`` characters, hashed with argon2id (``argon2-cffi``'s defaults, RFC 9106 low-memory
profile); a hash made with older parameters is replaced at the next successful sign-in. Passwords
are never stored, logged or put into an error message.

Lockout (``LockoutPolicy``, from ``core.settings.login_lockout``): ``max_failures`` failed sign-ins
within ``window`` lock the username for ``lock``; attempts while locked are refused without checking
the password and do not extend the lock; a successful sign-in or an admin's password reset clears the
count. Attempts are rows of ``login_attempts`` keyed by a digest of the typed name, so the lockout
holds across server processes, and unknown names are locked exactly like real ones: no message
tells whether a username exists (an unknown name, a wrong password and a disabled account all give
the same ``AuthenticationError``). An unknown name is checked against a dummy hash so the answer
takes as long.

Errors are ``core.errors.AuthError`` subclasses: ``AuthenticationError``, ``AccountLockedError``
(``.locked_until``), ``UserValidationError`` (``.field``), ``UserExistsError``, ``UserNotFoundError``,
``LastAdminError``, ``AuthStorageError``. Their messages are meant for the user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, insert, select, update

from core.errors import AuthError, ChestReviewError
from core.reviews.schema import ROLES, USERNAME_MAX, login_attempts_table, users_table
from core.reviews.store import ReviewStore, read_transaction, write_transaction

PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # argon2 takes any length; a megabyte "password" is an attack, not a password
FIRST_ADMIN = "admin"
_USERNAME = re.compile(r"^[a-z0-9._-]{1,%d}$" % USERNAME_MAX)
_KEY_SALT = b"chest-review/login-attempts/v1"
_KEY_ROUNDS = 20_000  # slows guessing a password typed into the username box from its digest


# --------------------------------------------------------------------------------------------------
# Errors


class AuthenticationError(AuthError):
    """Wrong username or password (or a disabled account: the message does not say which)."""


class AccountLockedError(AuthError):
    """Too many failed sign-ins with this username; ``locked_until`` (UTC) says when to try again."""

    def __init__(self, message: str, locked_until: datetime) -> None:
        super().__init__(message)
        self.locked_until = locked_until


class UserValidationError(AuthError):
    """A username, password or role is not acceptable; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class UserExistsError(AuthError):
    """An account of that username exists already."""


class UserNotFoundError(AuthError):
    """No account has that username (only raised to admins and the command line, never at sign-in)."""


class LastAdminError(AuthError):
    """The change would leave no active administrator."""


class AuthStorageError(AuthError):
    """The accounts could not be read or written (database busy, read-only, damaged)."""


# --------------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class User:
    """An account as the app sees it (never its password hash)."""

    username: str
    role: str
    active: bool
    must_change_password: bool = False
    created_at: datetime | None = None
    last_login_at: datetime | None = None


@dataclass(frozen=True)
class LockoutPolicy:
    """``max_failures`` failed sign-ins within ``window`` lock a username for ``lock``."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock: timedelta = timedelta(minutes=15)

    @classmethod
    def from_settings(cls) -> LockoutPolicy:
        from core.settings import login_lockout

        failures, window_min, lock_min = login_lockout()
        return cls(max(1, failures), timedelta(minutes=window_min), timedelta(minutes=lock_min))


def locked_until(failures: Sequence[datetime], policy: LockoutPolicy) -> datetime | None:
    """When the lock set by ``failures`` (failed attempts since the last success, oldest first) ends; None: no lock.

    A lock starts at each failure that completes ``max_failures`` failures within ``window``.
    """
    n = policy.max_failures
    ends = [failures[i] + policy.lock for i in range(n - 1, len(failures))
            if failures[i] - failures[i - n + 1] <= policy.window]
    return max(ends) if ends else None


def normalised_username(value: Any) -> str:
    """The account name ``value`` stands for: trimmed and lower case (not validated)."""
    return value.strip().lower() if isinstance(value, str) else ""


def validated_username(value: Any) -> str:
    name = normalised_username(value)
    if not _USERNAME.match(name):
        raise UserValidationError(
            "username",
            f"A username is 1 to {USERNAME_MAX} letters, digits, dots, hyphens or underscores (no spaces).",
        )
    return name


def validated_password(password: Any, username: str) -> str:
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise UserValidationError("password", f"The password must have at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise UserValidationError("password", f"The password must have at most {PASSWORD_MAX} characters.")
    if not password.strip():
        raise UserValidationError("password", "The password cannot be only spaces.")
    if password.strip().lower() == username:
        raise UserValidationError("password", "The password must not be the username.")
    return password


def validated_role(role: Any) -> str:
    if role not in ROLES:
        raise UserValidationError("role", f"The role must be one of {', '.join(ROLES)}.")
    return role


def username_key(typed: Any) -> str:
    """The digest ``login_attempts`` records for a typed username (hex, 64 characters)."""
    name = normalised_username(typed)[:PASSWORD_MAX].encode("utf-8", "replace")
    return hashlib.pbkdf2_hmac("sha256", name, _KEY_SALT, _KEY_ROUNDS).hex()


def _lock_message(until: datetime, now: datetime) -> str:
    minutes = max(1, -int(-(until - now).total_seconds() // 60))  # rounded up
    return (f"Too many failed sign-ins with this username. Try again in {minutes} minute{'s' if minutes != 1 else ''}, "
            "or ask an administrator to reset the password.")


WRONG_CREDENTIALS = "Wrong username or password."


# --------------------------------------------------------------------------------------------------
# The store


class UserStore:
    """Accounts in the review log's database. Thread-safe; safe across processes (rows, not memory).

    ``url_or_store``: a SQLAlchemy URL (the store opens, and migrates, the review log there and closes
    it in ``close``) or an open ``ReviewStore`` whose engine it shares. ``hasher``, ``clock`` and
    ``lockout`` exist for tests (a cheaper hasher, a hand-moved clock).
    """

    def __init__(
        self,
        url_or_store: str | ReviewStore,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], datetime] | None = None,
        lockout: LockoutPolicy | None = None,
    ) -> None:
        self._owns_store = isinstance(url_or_store, str)
        self._reviews = ReviewStore(url_or_store) if self._owns_store else url_or_store
        self._engine = self._reviews.engine
        self._hasher = hasher or PasswordHasher()
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.lockout = lockout or LockoutPolicy.from_settings()
        self._dummy_hash: str | None = None

    def close(self) -> None:
        if self._owns_store:
            self._reviews.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise AuthError("The account clock must return a timezone-aware datetime.")
        return now.astimezone(timezone.utc)

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except ChestReviewError:
            raise
        except (sa_exc.SQLAlchemyError, sqlite3.Error, OSError) as error:
            text = str(getattr(error, "orig", None) or error).lower()
            why = "it is busy; try again in a moment" if ("locked" in text or "busy" in text) else \
                "the database cannot be used; ask an administrator"
            raise AuthStorageError(f"The user accounts could not be {action}: {why}.") from error

    # ---- reads

    def users(self) -> list[User]:
        """Every account, active or not, by username."""
        with self._guard("read"), read_transaction(self._engine) as conn:
            rows = conn.execute(select(users_table).order_by(users_table.c.username)).mappings().all()
        return [_to_user(row) for row in rows]

    def user(self, username: str) -> User | None:
        """The account ``username`` (any state), or None."""
        with self._guard("read"), read_transaction(self._engine) as conn:
            row = self._row(conn, normalised_username(username))
        return _to_user(row) if row is not None else None

    def active_user(self, username: str) -> User | None:
        """The account ``username`` while it is active, else None: what a session checks on every page."""
        user = self.user(username)
        return user if user is not None and user.active else None

    def count_users(self) -> int:
        with self._guard("read"), read_transaction(self._engine) as conn:
            return conn.execute(select(func.count()).select_from(users_table)).scalar_one()

    @staticmethod
    def _row(conn, name: str):
        return conn.execute(select(users_table).where(users_table.c.username == name)).mappings().first()

    # ---- accounts

    def create_user(self, username: str, password: str, role: str = "reviewer", *,
                    must_change_password: bool = False) -> User:
        """A new active account; ``must_change_password`` when someone else chose the password."""
        name = validated_username(username)
        password_hash = self._hasher.hash(validated_password(password, name))
        role = validated_role(role)
        now = self._now()
        with self._guard("saved"):
            try:
                with write_transaction(self._engine) as conn:
                    if self._row(conn, name) is not None:
                        raise UserExistsError(f"There is already an account named {name!r}.")
                    conn.execute(insert(users_table).values(
                        username=name, password_hash=password_hash, role=role, active=True,
                        must_change_password=must_change_password, created_at=now, password_changed_at=now))
            except sa_exc.IntegrityError as error:  # another process created it in between
                raise UserExistsError(f"There is already an account named {name!r}.") from error
        return User(name, role, True, must_change_password, now, None)

    def create_first_admin(self, username: str = FIRST_ADMIN) -> str | None:
        """On an empty user table only: an admin with a random password, returned once; else None.

        Atomic across processes: of several servers starting at once, one creates the account.
        """
        name = validated_username(username)
        password = secrets.token_urlsafe(15)  # 20 characters, 120 random bits
        password_hash = self._hasher.hash(password)
        now = self._now()
        with self._guard("saved"):
            try:
                with write_transaction(self._engine) as conn:
                    if conn.execute(select(func.count()).select_from(users_table)).scalar_one():
                        return None
                    conn.execute(insert(users_table).values(
                        username=name, password_hash=password_hash, role="admin", active=True,
                        must_change_password=True, created_at=now, password_changed_at=now))
            except sa_exc.IntegrityError:  # PostgreSQL: a concurrent first start inserted the same name
                return None
        return password

    def set_role(self, username: str, role: str) -> User:
        role = validated_role(role)
        return self._change(username, {"role": role}, demotes=role != "admin")

    def disable_user(self, username: str) -> User:
        """The account can no longer sign in (sessions end at their next action); its reviews stay."""
        return self._change(username, {"active": False}, demotes=True)

    def enable_user(self, username: str) -> User:
        return self._change(username, {"active": True}, demotes=False)

    def reset_password(self, username: str, new_password: str, *, must_change_password: bool = True) -> User:
        """Set a password chosen by an admin; clears the lockout. By default the user must change it."""
        name = normalised_username(username)
        password_hash = self._hasher.hash(validated_password(new_password, name))
        now = self._now()
        user = self._change(name, {"password_hash": password_hash, "password_changed_at": now,
                                   "must_change_password": must_change_password}, demotes=False)
        self._record(name, "reset", now)
        return user

    def change_password(self, username: str, old_password: str, new_password: str) -> User:
        """The user's own change: the old password must be right (and the lockout applies)."""
        user = self.authenticate(username, old_password)
        if new_password == old_password:
            raise UserValidationError("password", "Choose a password different from the current one.")
        return self.reset_password(user.username, new_password, must_change_password=False)

    def _change(self, username: str, values: dict[str, Any], *, demotes: bool) -> User:
        name = normalised_username(username)
        with self._guard("saved"), write_transaction(self._engine) as conn:
            row = self._row(conn, name)
            if row is None:
                raise UserNotFoundError(f"There is no account named {name!r}.")
            if demotes and row["role"] == "admin" and row["active"] and self._other_active_admins(conn, name) == 0:
                raise LastAdminError(f"{name!r} is the only active administrator; make another user admin first.")
            conn.execute(update(users_table).where(users_table.c.username == name).values(**values))
            return _to_user(self._row(conn, name))

    @staticmethod
    def _other_active_admins(conn, name: str) -> int:
        t = users_table.c
        return conn.execute(select(func.count()).select_from(users_table).where(
            t.role == "admin", t.active.is_(True), t.username != name)).scalar_one()

    # ---- signing in

    def authenticate(self, username: str, password: str) -> User:
        """The active account of ``username`` if ``password`` is its password; every attempt is recorded.

        Raises ``AccountLockedError`` while the name is locked (password not checked), else
        ``AuthenticationError`` for an unknown name, a wrong password or a disabled account alike.
        """
        name = normalised_username(username)
        key = username_key(name)
        now = self._now()
        with self._guard("read"), read_transaction(self._engine) as conn:
            until = self._locked_until(conn, key, now)
            row = self._row(conn, name) if _USERNAME.match(name) else None
        if until is not None and now < until:
            raise AccountLockedError(_lock_message(until, now), until)
        known = row is not None and row["active"]
        matches = self._verify(row["password_hash"] if known else self._dummy(), password)
        ok = known and matches
        self._record(name, "success" if ok else "failure", now, key=key)
        if not ok:
            raise AuthenticationError(WRONG_CREDENTIALS)
        updates: dict[str, Any] = {"last_login_at": now}
        if self._hasher.check_needs_rehash(row["password_hash"]):
            updates["password_hash"] = self._hasher.hash(password)
        with self._guard("saved"), write_transaction(self._engine) as conn:
            conn.execute(update(users_table).where(users_table.c.username == name).values(**updates))
            return _to_user(self._row(conn, name))

    def locked_until(self, username: str) -> datetime | None:
        """When the lock on ``username`` ends, or None when it is not locked now (for admins and tests)."""
        now = self._now()
        with self._guard("read"), read_transaction(self._engine) as conn:
            until = self._locked_until(conn, username_key(username), now)
        return until if until is not None and now < until else None

    def _locked_until(self, conn, key: str, now: datetime) -> datetime | None:
        t = login_attempts_table.c
        cleared = conn.execute(select(func.max(t.attempted_at)).where(
            t.username_key == key, t.outcome.in_(("success", "reset")))).scalar_one()
        since = now - self.lockout.window - self.lockout.lock
        if cleared is not None:
            cleared = cleared.replace(tzinfo=timezone.utc) if cleared.tzinfo is None else cleared  # func.max: raw
            since = max(since, cleared)
        failures = conn.execute(select(t.attempted_at).where(
            t.username_key == key, t.outcome == "failure", t.attempted_at > since).order_by(t.attempted_at)).scalars()
        return locked_until(list(failures), self.lockout)

    def _record(self, name: str, outcome: str, now: datetime, key: str | None = None) -> None:
        with self._guard("saved"), write_transaction(self._engine) as conn:
            conn.execute(insert(login_attempts_table).values(
                username_key=key or username_key(name), attempted_at=now, outcome=outcome))

    def _verify(self, password_hash: str, password: Any) -> bool:
        if not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash


def _to_user(row) -> User:
    return User(username=row["username"], role=row["role"], active=bool(row["active"]),
                must_change_password=bool(row["must_change_password"]), created_at=row["created_at"],
                last_login_at=row["last_login_at"])


def ensure_first_admin(store: UserStore, out: IO[str] | None = None) -> bool:
    """First start: with no user at all, create the admin ``admin`` and print its one-time password to ``out``.

    ``out`` defaults to the server's stdout (its log), never the UI. True when the account was created now.
    """
    password = store.create_first_admin()
    if password is None:
        return False
    out = out or sys.stdout
    print(
        "\n=== Chest imaging review: first start ===\n"
        f"No user accounts existed, so the administrator account '{FIRST_ADMIN}' was created.\n"
        f"One-time password: {password}\n"
        "Sign in with it; the app then asks for a new password. This is printed once and not stored.\n"
        "Other accounts: the Users page, or python -m core.auth add-user --username NAME\n",
        file=out, flush=True,
    )
    return True
