"""Every page works from its own link, even as the first visit after the server starts.

A bookmark or a link from a colleague (``http://localhost:8501/chest_xray``) may be the server's first
request. The page must still run inside ``app.py``: first the sign-in form and nothing else, then,
signed in (as an admin, who sees every page), the page itself; the sidebar lists the app's pages
(never the files of ``pages/``: "common", "app") and shows the research-use banner. Each page gets a server of its own,
so that its link really is the first request, and a new browser context.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from streamlit.source_util import page_icon_and_name

from tests.browser.conftest import BROWSER_ADMIN
from tests.sign_in import sign_in_browser

pytestmark = pytest.mark.browser  # fixtures `fresh_server` and `browser`: tests/browser/conftest.py
REPO = Path(__file__).resolve().parents[2]
BANNER = "Research use only. Not for clinical use."  # app.py's sidebar warning


@dataclass(frozen=True)
class AppPage:
    url_path: str  # "" for the default page
    nav_title: str  # its entry in the sidebar
    heading: str  # the st.title the page shows


def _string(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _first_title(script: Path) -> str:
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "title":
            if (text := _string(node.args[0] if node.args else None)) is not None:
                return text
    raise AssertionError(f"{script.name} shows no st.title")


def app_pages() -> list[AppPage]:
    """The pages ``app.py`` lists in ``st.navigation`` (every ``st.Page("pages/...py", ...)``), read from its source."""
    pages = []
    calls = [node for node in ast.walk(ast.parse((REPO / "app.py").read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Page"]
    for node in sorted(calls, key=lambda call: (call.lineno, call.col_offset)):  # the order of the navigation
        script = REPO / _string(node.args[0])
        options = {k.arg: k.value for k in node.keywords}
        default = isinstance(options.get("default"), ast.Constant) and options["default"].value is True
        url_path = "" if default else (_string(options.get("url_path")) or page_icon_and_name(script)[1])
        nav_title = _string(options.get("title")) or page_icon_and_name(script)[1].replace("_", " ")
        pages.append(AppPage(url_path, nav_title, _first_title(script)))
    return pages


PAGES = app_pages()


def _texts(links) -> list[str]:
    return [text.strip() for text in links.all_inner_texts()]


def test_the_app_lists_its_pages():
    assert {"", "chest_xray", "review_log", "model_cards"} <= {p.url_path for p in PAGES}


@pytest.mark.parametrize("app_page", PAGES, ids=lambda p: p.url_path or "home")
def test_a_page_link_opened_first_runs_inside_the_app(fresh_server, browser, app_page):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(f"{fresh_server}/{app_page.url_path}")
        page.get_by_role("heading", level=1, name="Sign in").wait_for()  # a visitor sees the sign-in form only
        assert page.locator("[data-testid=stSidebarNav] a").count() == 0
        assert page.get_by_role("heading", level=1).all_inner_texts() == ["Sign in"]
        sign_in_browser(page, BROWSER_ADMIN)  # an admin: every page, Users included, is listed
        page.get_by_role("heading", level=1, name=app_page.heading).wait_for()
        sidebar = page.locator("[data-testid=stSidebar]")
        links = sidebar.locator("[data-testid=stSidebarNav] a")
        try:
            sidebar.get_by_text(BANNER).wait_for(timeout=30_000)  # app.py ran: its sidebar, its navigation
        except PlaywrightTimeoutError:
            pytest.fail(f"/{app_page.url_path} ran without app.py: no banner, the sidebar lists {_texts(links)}")
        links.first.wait_for()
        listed = _texts(links)
        assert listed == [p.nav_title for p in PAGES]
        assert not {"app", "common"} & {text.lower() for text in listed}
        content = page.content()
        assert "Traceback" not in content and "Page not found" not in content
    finally:
        context.close()
