"""core.auth: argon2id hashes (no clear password in the file), lockout across stores, sessions, roles, migration.

Every test uses a real SQLite file under tmp_path and a hand-moved clock.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command

from core.auth import (
    AccountLockedError,
    AuthenticationError,
    AuthError,
    LastAdminError,
    LockoutPolicy,
    PermissionDeniedError,
    Session,
    SessionPolicy,
    User,
    UserExistsError,
    UserNotFoundError,
    UserStore,
    UserValidationError,
    allowed,
    ensure_first_admin,
    expiry_message,
    locked_until,
    require,
    session_expiry,
    start_session,
    touched,
)
from core.errors import ChestReviewError
from core.reviews import ReviewStore, alembic_config
from tests.sign_in import FAST_HASHER

PASSWORD = "purple monkey dishwasher"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(url: str, clock: Clock):
    with UserStore(url, hasher=FAST_HASHER, clock=clock, lockout=LockoutPolicy()) as opened:
        yield opened


# ---------------------------------------------------------------------------------------------
# passwords


def test_the_database_file_never_holds_a_password_in_clear(store: UserStore, db_path: Path) -> None:
    store.create_user("ann", PASSWORD)
    store.reset_password("ann", "second secret pass")
    store.change_password("ann", "second secret pass", "third secret pass")
    with pytest.raises(AuthenticationError):
        store.authenticate("ann", "a wrong guess 123")
    with pytest.raises(AuthenticationError):
        store.authenticate("typed-my-password-here", "x" * 12)  # a password typed into the name box
    store.close()
    raw = b"".join(path.read_bytes() for path in db_path.parent.glob("reviews.sqlite*"))  # with -wal
    for secret in (PASSWORD, "second secret pass", "third secret pass", "a wrong guess 123", "typed-my-password-here"):
        assert secret.encode() not in raw
    with sqlite3.connect(db_path) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$")


def test_the_default_hasher_is_argon2id(url: str) -> None:
    with UserStore(url) as store:
        store.create_user("ann", PASSWORD)
        assert store.authenticate("ann", PASSWORD).username == "ann"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_a_weaker_hash_is_upgraded_at_the_next_sign_in(url: str, db_path: Path) -> None:
    with UserStore(url, hasher=FAST_HASHER) as store:
        store.create_user("ann", PASSWORD)
    with UserStore(url) as store:  # the app's default parameters
        store.authenticate("ann", PASSWORD)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT password_hash FROM users").fetchone()[0].startswith("$argon2id$v=19$m=65536")


@pytest.mark.parametrize("username, password, field", [
    ("", PASSWORD, "username"), ("a b", PASSWORD, "username"), ("x" * 101, PASSWORD, "username"),
    ("ann;drop", PASSWORD, "username"), ("ann", "short", "password"), ("ann", " " * 12, "password"),
    ("ann.smith", "Ann.Smith", "password"), ("ann", "x" * 1025, "password"),
])
def test_bad_usernames_and_passwords_are_refused_naming_the_field(store, username, password, field) -> None:
    with pytest.raises(UserValidationError) as refused:
        store.create_user(username, password)
    assert refused.value.field == field and isinstance(refused.value, AuthError)
    assert store.users() == []


def test_usernames_are_case_insensitive_and_unique(store: UserStore) -> None:
    assert store.create_user(" Dr.Ann-1_x ", PASSWORD).username == "dr.ann-1_x"
    with pytest.raises(UserExistsError):
        store.create_user("DR.ANN-1_X", PASSWORD)
    assert store.authenticate("Dr.Ann-1_X", PASSWORD).username == "dr.ann-1_x"
    assert store.create_user("x" * 100, PASSWORD).username == "x" * 100


# ---------------------------------------------------------------------------------------------
# authentication and lockout


def test_unknown_name_wrong_password_and_disabled_account_look_the_same(store: UserStore) -> None:
    store.create_user("boss", PASSWORD, "admin")
    store.create_user("ann", PASSWORD)
    store.disable_user("ann")
    messages = set()
    for name, password in (("ann", PASSWORD), ("boss", "not the password"), ("nobody", PASSWORD), ("bad name!", PASSWORD)):
        with pytest.raises(AuthenticationError) as refused:
            store.authenticate(name, password)
        messages.add(str(refused.value))
    assert messages == {"Wrong username or password."}


def test_five_failures_in_fifteen_minutes_lock_the_name_for_fifteen(store: UserStore, clock: Clock) -> None:
    store.create_user("ann", PASSWORD)
    for _ in range(4):
        with pytest.raises(AuthenticationError):
            store.authenticate("ann", "wrong password")
        clock.advance(minutes=3)
    with pytest.raises(AuthenticationError):  # the 5th, 12 minutes after the 1st
        store.authenticate("ann", "wrong password")
    lock_start = clock.now
    with pytest.raises(AccountLockedError) as locked:
        store.authenticate("ann", PASSWORD)  # right password, refused while locked
    assert locked.value.locked_until == lock_start + timedelta(minutes=15)
    assert "15 minutes" in str(locked.value) and "ann" not in str(locked.value)
    clock.advance(minutes=14, seconds=59)
    with pytest.raises(AccountLockedError):  # attempts while locked do not extend the lock
        store.authenticate("ann", PASSWORD)
    clock.advance(seconds=1)
    assert store.authenticate("ann", PASSWORD).username == "ann"
    with pytest.raises(AuthenticationError):  # the success cleared the count
        store.authenticate("ann", "wrong password")


def test_failures_spread_wider_than_the_window_do_not_lock(store: UserStore, clock: Clock) -> None:
    store.create_user("ann", PASSWORD)
    for _ in range(8):
        with pytest.raises(AuthenticationError):
            store.authenticate("ann", "wrong password")
        clock.advance(minutes=4)  # at most 4 failures in any 15 minutes
    assert store.authenticate("ann", PASSWORD).username == "ann"


def test_an_unknown_name_is_locked_like_a_real_one(store: UserStore) -> None:
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            store.authenticate("nobody", "wrong password")
    with pytest.raises(AccountLockedError):
        store.authenticate("nobody", "wrong password")


def test_the_lockout_holds_across_stores_and_an_admin_reset_lifts_it(review_db_url: str, clock: Clock) -> None:
    """On SQLite and on PostgreSQL: accounts, sign-in, lockout and reset through two stores (two server processes)."""
    stores = [UserStore(review_db_url, hasher=FAST_HASHER, clock=clock) for _ in range(2)]
    stores[0].create_user("ann", PASSWORD)
    for attempt in range(5):
        with pytest.raises(AuthenticationError):
            stores[attempt % 2].authenticate("ann", "wrong password")
    with pytest.raises(AccountLockedError):
        stores[1].authenticate("ann", PASSWORD)
    assert stores[0].locked_until("ann") == clock.now + timedelta(minutes=15)
    stores[0].reset_password("ann", "a new temporary one")
    assert stores[1].locked_until("ann") is None
    user = stores[1].authenticate("ann", "a new temporary one")
    assert user.must_change_password
    for opened in stores:
        opened.close()


def test_lockout_rule_as_a_pure_function() -> None:
    policy = LockoutPolicy(max_failures=3, window=timedelta(minutes=10), lock=timedelta(minutes=5))
    at = [T0 + timedelta(minutes=m) for m in (0, 4, 9, 30, 31)]
    assert locked_until(at[:2], policy) is None
    assert locked_until(at[:3], policy) == at[2] + timedelta(minutes=5)
    assert locked_until(at, policy) == at[2] + timedelta(minutes=5)  # 9, 30, 31 span 22 min: no new lock
    assert locked_until([T0, T0 + timedelta(minutes=11), T0 + timedelta(minutes=12)], policy) is None


def test_settings_configure_the_lockout(monkeypatch) -> None:
    monkeypatch.setenv("CHEST_LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("CHEST_LOGIN_WINDOW_MINUTES", "10")
    monkeypatch.setenv("CHEST_LOGIN_LOCK_MINUTES", "not a number")  # falls back to the default
    assert LockoutPolicy.from_settings() == LockoutPolicy(3, timedelta(minutes=10), timedelta(minutes=15))


# ---------------------------------------------------------------------------------------------
# accounts


def test_admin_operations_and_the_last_active_admin(store: UserStore) -> None:
    store.create_user("boss", PASSWORD, "admin")
    store.create_user("ann", PASSWORD)
    with pytest.raises(LastAdminError):
        store.disable_user("boss")
    with pytest.raises(LastAdminError):
        store.set_role("boss", "reviewer")
    assert store.set_role("ann", "admin").role == "admin"
    assert store.disable_user("boss").active is False
    assert store.active_user("boss") is None and store.user("boss").active is False
    assert store.enable_user("boss").active is True
    with pytest.raises(UserNotFoundError):
        store.disable_user("nobody")
    with pytest.raises(UserValidationError):
        store.set_role("ann", "superuser")
    assert [u.username for u in store.users()] == ["ann", "boss"]


def test_change_password_needs_the_old_one(store: UserStore) -> None:
    store.create_user("ann", PASSWORD, must_change_password=True)
    with pytest.raises(AuthenticationError):
        store.change_password("ann", "not the password", "a brand new password")
    with pytest.raises(UserValidationError):
        store.change_password("ann", PASSWORD, PASSWORD)
    assert store.change_password("ann", PASSWORD, "a brand new password").must_change_password is False
    assert store.authenticate("ann", "a brand new password").username == "ann"


def test_first_admin_is_created_once_with_a_random_password(store: UserStore, capsys) -> None:
    import io

    out = io.StringIO()
    assert ensure_first_admin(store, out) is True
    printed = out.getvalue()
    password = printed.split("One-time password: ")[1].split()[0]
    assert len(password) == 20
    user = store.authenticate("admin", password)
    assert (user.role, user.must_change_password) == ("admin", True)
    assert ensure_first_admin(store, out) is False and out.getvalue() == printed
    assert store.create_first_admin() is None


def test_no_first_admin_when_accounts_exist(store: UserStore) -> None:
    store.create_user("ann", PASSWORD)
    assert store.create_first_admin() is None and [u.username for u in store.users()] == ["ann"]


def test_a_damaged_database_raises_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(ChestReviewError):
        UserStore(f"sqlite:///{path}")


# ---------------------------------------------------------------------------------------------
# sessions


def test_sessions_expire_when_idle_and_when_too_old() -> None:
    policy = SessionPolicy(idle=timedelta(minutes=60), lifetime=timedelta(hours=12))
    session = start_session(User("ann", "reviewer", True), T0)
    assert isinstance(session, Session) and len(session.token) >= 40
    assert start_session(User("ann", "reviewer", True), T0).token != session.token
    assert session_expiry(session, T0 + timedelta(minutes=59), policy) is None
    assert session_expiry(session, T0 + timedelta(minutes=60), policy) == "idle"
    now = T0
    for _ in range(11 * 2):  # active every 30 minutes: never idle ...
        now += timedelta(minutes=30)
        assert session_expiry(session, now, policy) is None
        session = touched(session, now)
    now += timedelta(minutes=59)
    assert session_expiry(session, now, policy) is None
    assert session_expiry(session, T0 + timedelta(hours=12), policy) == "lifetime"  # ... but not for ever
    assert touched(session, T0).last_seen_at == session.last_seen_at  # a clock going back changes nothing
    assert "60 minutes" not in expiry_message("idle", policy) and "1 hour" in expiry_message("idle", policy)
    assert "12 hours" in expiry_message("lifetime", policy)
    with pytest.raises(AuthError):
        session_expiry(session, datetime(2026, 3, 1, 9, 0), policy)  # naive


def test_session_policy_from_settings(monkeypatch) -> None:
    monkeypatch.setenv("CHEST_SESSION_IDLE_MINUTES", "15")
    monkeypatch.setenv("CHEST_SESSION_MAX_HOURS", "0")  # not positive: the default stays
    assert SessionPolicy.from_settings() == SessionPolicy(timedelta(minutes=15), timedelta(hours=12))


# ---------------------------------------------------------------------------------------------
# roles


def test_roles() -> None:
    admin, reviewer = User("boss", "admin", True), User("ann", "reviewer", True)
    for permission in ("read", "review", "export_own"):
        assert allowed(admin, permission) and allowed(reviewer, permission)
    for permission in ("export_all", "manage_users"):
        assert allowed(admin, permission) and not allowed(reviewer, permission)
    assert not allowed(None, "read") and not allowed(User("boss", "admin", False), "read")
    with pytest.raises(PermissionDeniedError, match="admin"):
        require(reviewer, "manage_users")
    with pytest.raises(ValueError):
        allowed(admin, "fly")


# ---------------------------------------------------------------------------------------------
# migration 0006


def test_migration_0006_downgrade_refuses_to_drop_users_unless_forced(url: str, db_path: Path) -> None:
    from core.reviews.__main__ import main as reviews_cli

    with UserStore(url, hasher=FAST_HASHER) as store:
        store.create_user("ann", PASSWORD)
    with pytest.raises(RuntimeError, match="1 user account"):
        command.downgrade(alembic_config(url), "0005")
    reviews_cli(["--url", url, "-x", "drop_users=yes", "downgrade", "0005"])
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "users" not in tables and "login_attempts" not in tables and "reviews" in tables
    ReviewStore(url).close()  # upgrades again
    with UserStore(url, hasher=FAST_HASHER) as store:
        assert store.users() == []
