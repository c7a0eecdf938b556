"""Signing test users in: accounts in the test's review database, a session for AppTest, the form in a browser.

    from tests.sign_in import sign_in, sign_in_browser, ensure_user, TEST_PASSWORD

    at = AppTest.from_file(PAGE); sign_in(at, "dr.ann", role="reviewer"); at.run()   # AppTest
    ensure_user(url, "dr.ann", role="reviewer"); sign_in_browser(page, "dr.ann")      # Playwright

``tests/pages/conftest.py`` signs every AppTest in as ``DEFAULT_USER`` (an admin) unless the test
asks for the ``signed_out`` fixture.
"""

from __future__ import annotations

from datetime import datetime, timezone

from argon2 import PasswordHasher

DEFAULT_USER = "dr.apptest"
TEST_PASSWORD = "correct horse battery staple"  # test accounts only
# argon2id at the lowest cost: the tests hash many passwords; the app verifies any parameters (they are in the hash).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def ensure_user(url: str, username: str, role: str = "reviewer", password: str = TEST_PASSWORD):
    """The active account ``username`` in the database at ``url`` (created when missing); a ``core.auth.User``."""
    from core.auth import UserStore

    with UserStore(url, hasher=FAST_HASHER) as store:
        return store.user(username) or store.create_user(username, password, role)


def sign_in(at, username: str = DEFAULT_USER, role: str = "admin", url: str | None = None):
    """Sign ``at`` (a Streamlit AppTest, before its run) in as ``username``, created in the app's database."""
    from core.auth import User, start_session
    from core.errors import ChestReviewError
    from core.settings import review_db_url
    from pages.common import SESSION_KEY

    try:
        user = ensure_user(url or review_db_url(), username, role)
    except ChestReviewError:  # a test of a broken database: the page itself must report it
        user = User(username, role, True)
    at.session_state[SESSION_KEY] = start_session(user, datetime.now(timezone.utc))
    return user


def sign_in_browser(page, username: str, password: str = TEST_PASSWORD) -> None:
    """Fill the app's sign-in form in a Playwright page showing it, and wait until it is gone."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {username}").first.wait_for()
