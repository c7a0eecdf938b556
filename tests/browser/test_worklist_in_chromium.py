"""The worklist in the real app: on a seeded multi-reader data set, a third reader finds the cases they have not
read, opens one (it shows on the X-ray page with its stored result, other readers' reviews hidden), reads it
blind, saves, and the case leaves their "not yet reviewed by me" list."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from core.cases import CaseStore, WorklistFilters, worklist
from core.cases.demo import DEMO_READERS, seed_demo
from core.reviews import ReviewStore
from tests.browser.conftest import choose, goto_signed_in, running_app, wait_until_settled
from tests.sign_in import ensure_user

pytestmark = pytest.mark.browser  # fixture `browser`: tests/browser/conftest.py


def wait_for_count(page, shown: int, total: int) -> None:
    """Wait until the worklist says "shown of total stored cases" (the rerun after a click has finished)."""
    page.get_by_text(re.compile(rf"^{shown} of {total} stored cases")).wait_for()
    wait_until_settled(page)  # the rows below the count are this run's, so a click on one is not lost


def expected_count(tmp_path, **filters) -> int:
    with ReviewStore(f"sqlite:///{tmp_path / 'reviews.sqlite'}") as store:
        cases = CaseStore(store, tmp_path / "cases", retention_days=365).list_cases()
        return len(worklist(cases, store.current_reviews(), WorklistFilters(**filters)))


def choose_chest_xray_cases_not_read_by_me(page, todo_all: int, todo_cxr: int, total: int) -> None:
    page.get_by_text("Not yet reviewed by me", exact=True).click()
    wait_for_count(page, todo_all, total)
    choose(page, page.get_by_role("combobox", name="Task"), "Chest X-ray")
    wait_for_count(page, todo_cxr, total)


def test_find_open_and_read_a_case_from_the_worklist(browser, tmp_path, bundled_weights_dir):
    seed_demo(f"sqlite:///{tmp_path / 'reviews.sqlite'}", tmp_path / "cases", now=datetime.now(timezone.utc))
    me = DEMO_READERS[2]
    total = expected_count(tmp_path)
    todo_all = expected_count(tmp_path, reviewer=me, not_reviewed_by_me=True)
    todo_cxr = expected_count(tmp_path, reviewer=me, not_reviewed_by_me=True, task="cxr")
    assert total > todo_all > todo_cxr > 0
    ensure_user(f"sqlite:///{tmp_path / 'reviews.sqlite'}", me)  # the third reader signs in
    with running_app(tmp_path, bundled_weights_dir) as server:
        page = browser.new_page()
        page.set_default_timeout(120_000)
        goto_signed_in(page, f"{server}/worklist", me)
        wait_for_count(page, total, total)
        choose_chest_xray_cases_not_read_by_me(page, todo_all, todo_cxr, total)

        # the rows' buttons (a selectbox's arrow is an "Open" button too)
        page.locator("[data-testid=stButton]").get_by_role("button", name="Open").first.click()
        page.get_by_text("Prediction:").wait_for()
        page.wait_for_function("() => location.pathname.endsWith('/chest_xray')")  # st.switch_page: no page load
        page.get_by_text("Earlier reads of this case").wait_for()
        page.get_by_text("The stored result came from manet-demo-scripted").wait_for()  # scripted seed vs real model
        tables = page.locator("[data-testid=stDataFrame]")
        tables.first.wait_for()
        page.wait_for_timeout(1000)  # the run has drawn everything it draws
        assert tables.count() == 1  # the stored result beside the re-analysis; the others' reviews stay hidden
        page.get_by_text("Show other readers' reviews").click()
        tables.nth(1).wait_for()
        assert "Traceback" not in page.content()

        page.get_by_text(f"Saved under your sign-in: {me}").wait_for()
        page.get_by_role("button", name="Save review").click()
        page.get_by_text("Review saved").wait_for()

        page.get_by_role("link", name="Worklist").click()  # same session
        wait_for_count(page, total, total)
        choose_chest_xray_cases_not_read_by_me(page, todo_all - 1, todo_cxr - 1, total)
        page.close()
