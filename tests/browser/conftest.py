"""The real app, really started (``streamlit run app.py``), and Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BROWSER_ADMIN = "test.admin"  # accounts running_app creates (password tests.sign_in.TEST_PASSWORD)
BROWSER_REVIEWER = "dr.browser"


@contextmanager
def app_process(folder: Path, weights_dir: Path, env: dict | None = None, *,
                with_users: bool = True) -> Iterator[tuple[str, subprocess.Popen]]:
    """A fresh server process on a free port, with its own review log in ``folder``; yields (URL, process).

    ``with_users``: the log holds the accounts ``BROWSER_ADMIN`` and ``BROWSER_REVIEWER`` (sign in with
    ``goto_signed_in``); without them the server starts as a new install (it prints the first admin's password).
    """
    if with_users:
        from tests.sign_in import ensure_user

        ensure_user(f"sqlite:///{folder / 'reviews.sqlite'}", BROWSER_ADMIN, role="admin")
        ensure_user(f"sqlite:///{folder / 'reviews.sqlite'}", BROWSER_REVIEWER, role="reviewer")
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.headless", "true"]
    env = {**os.environ, "CHEST_REVIEW_DB": str(folder / "reviews.sqlite"), "CHEST_WEIGHTS_DIR": str(weights_dir), **(env or {})}
    log_path = folder / "streamlit.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_healthy(url, process, log_path)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_app(folder: Path, weights_dir: Path, *, with_users: bool = True) -> Iterator[str]:
    """``app_process``'s URL."""
    with app_process(folder, weights_dir, with_users=with_users) as (url, _process):
        yield url


def _wait_until_healthy(url: str, process: subprocess.Popen, log_path: Path, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail("streamlit did not start: " + log_path.read_text()[-2000:])


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundled_weights_dir) -> Iterator[str]:
    """One server for a module's tests."""
    with running_app(tmp_path_factory.mktemp("app"), bundled_weights_dir) as url:
        yield url


@pytest.fixture
def fresh_server(tmp_path, bundled_weights_dir) -> Iterator[str]:
    """A server started for this test alone: its first visitor is the test's."""
    with running_app(tmp_path, bundled_weights_dir) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def wait_until_settled(page) -> None:
    """Until the app's script run is over: during one, Streamlit shows the old elements (stale) beside the new ones,
    and a click on an old one can be lost."""
    page.wait_for_timeout(300)  # the rerun a click starts has begun
    page.wait_for_function(
        "() => !document.querySelector('[data-stale=\"true\"], [data-testid=stStatusWidgetRunningIcon],"
        " [data-testid=stStatusWidgetRunningManIcon]')")


def click_and_settle(page, locator) -> None:
    """Click, then wait until the rerun the click started is over (what is clicked next is that run's element)."""
    locator.click()
    wait_until_settled(page)


def choose(page, select_box, option: str, attempts: int = 4) -> None:
    """Pick ``option`` in ``select_box`` (a locator) between settled runs: a click during a rerun can land on an
    element about to be replaced, and a rerun that a component starts by itself (the drawing canvas reporting its
    state) closes an open list, as it would for a user, who then clicks again: so does this, a few times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    wanted = page.get_by_role("option", name=option)
    for _ in range(attempts):
        wait_until_settled(page)
        select_box.first.click()
        try:
            wanted.click(timeout=15_000)
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")  # a list left open, if any
            continue
        wait_until_settled(page)
        return
    raise AssertionError(f"{option!r} could not be chosen in {select_box} ({attempts} attempts)")


def goto_signed_in(page, url: str, username: str = BROWSER_REVIEWER) -> None:
    """Open ``url``; sign in as ``username`` when the app asks (a new browser tab or a reload starts a new session)."""
    from tests.sign_in import sign_in_browser

    page.goto(url)
    sign_in_button = page.get_by_role("button", name="Sign in")
    signed_in = page.get_by_text(f"Signed in as {username}").first
    sign_in_button.or_(signed_in).first.wait_for()
    if sign_in_button.is_visible():
        sign_in_browser(page, username)
