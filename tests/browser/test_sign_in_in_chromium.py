"""Logins in the real app: the first start's admin, the forced new password, sign-out, roles in the sidebar."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import BROWSER_REVIEWER, goto_signed_in, running_app
from tests.sign_in import sign_in_browser

pytestmark = pytest.mark.browser  # fixtures `server`, `browser`, `bundled_weights_dir`: tests/browser/conftest.py


def _printed_password(log_path, seconds: float = 60) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = re.search(r"One-time password: (\S+)", log_path.read_text())
        if found:
            return found.group(1)
        time.sleep(0.5)
    pytest.fail("the first start printed no admin password: " + log_path.read_text()[-2000:])


def test_first_start_admin_signs_in_with_the_printed_password_and_sets_their_own(browser, tmp_path, bundled_weights_dir):
    with running_app(tmp_path, bundled_weights_dir, with_users=False) as url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(url)
        page.get_by_role("heading", level=1, name="Sign in").wait_for()
        password = _printed_password(tmp_path / "streamlit.log")  # the server's log, never the page
        assert password not in page.content()

        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", level=1, name="Choose a new password").wait_for()
        page.get_by_label("Current password").fill(password)
        page.get_by_label("New password", exact=True).fill("the admin's own passphrase")
        page.get_by_label("New password again").fill("the admin's own passphrase")
        page.get_by_role("button", name="Set password").click()
        page.get_by_role("heading", level=1, name="Chest imaging review").wait_for()
        sidebar = page.locator("[data-testid=stSidebar]")
        sidebar.get_by_text("Signed in as admin (admin)").wait_for()
        nav = sidebar.locator("[data-testid=stSidebarNav] a")
        nav.first.wait_for()
        assert "Users" in [text.strip() for text in nav.all_inner_texts()]

        sidebar.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", level=1, name="Sign in").wait_for()
        page.get_by_text("You signed out.").wait_for()
        assert sidebar.locator("[data-testid=stSidebarNav] a").count() == 0
        sign_in_browser(page, "admin", "the admin's own passphrase")
        assert "Traceback" not in page.content()
        context.close()
    assert (tmp_path / "streamlit.log").read_text().count(password) == 1  # printed once, logged nowhere else


def test_a_reviewer_sees_no_users_page(server, browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(90_000)
    goto_signed_in(page, f"{server}/review_log", BROWSER_REVIEWER)
    page.get_by_role("heading", level=1, name="Review log").wait_for()  # the page asked for, after signing in
    nav = page.locator("[data-testid=stSidebar] [data-testid=stSidebarNav] a")
    nav.first.wait_for()
    listed = [text.strip() for text in nav.all_inner_texts()]
    assert "Review log" in listed and "Users" not in listed
    page.reload()  # a reload is a new Streamlit session: sign in again (README, Logins and roles)
    page.get_by_role("heading", level=1, name="Sign in").wait_for()
    goto_signed_in(page, f"{server}/users", BROWSER_REVIEWER)
    page.get_by_role("heading", level=1, name="Chest imaging review").wait_for()  # not found: the home page instead
    assert page.get_by_role("heading", level=1, name="Users").count() == 0
    context.close()
