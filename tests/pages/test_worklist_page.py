"""pages/worklist.py through Streamlit's AppTest on a seeded multi-reader data set; opening a case shows it
on its task's page with the stored result and the earlier reviews (others' hidden until asked)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.cases import CaseStore, WorklistFilters, worklist
from core.cases.demo import DEMO_READERS, seed_demo
from core.reviews import ReviewStore
from tests.sign_in import sign_in

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
PAGE = str(REPO / "pages" / "worklist.py")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundled_weights_dir) -> Path:
    path = tmp_path / "reviews.sqlite"
    for name in ("CHEST_REVIEW_DB_URL", "CHEST_CASE_STORE", "CHEST_CASE_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHEST_REVIEW_DB", str(path))  # the case store defaults to cases/ beside it
    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(bundled_weights_dir))
    st.cache_resource.clear()
    yield path
    st.cache_resource.clear()


@pytest.fixture
def seeded(db: Path) -> Path:
    seed_demo(f"sqlite:///{db}", db.parent / "cases", now=datetime.now(timezone.utc))
    return db


def expected(db: Path, filters: WorklistFilters) -> list:
    with ReviewStore(f"sqlite:///{db}") as store:
        return worklist(CaseStore(store, db.parent / "cases", retention_days=365).list_cases(), store.current_reviews(),
                        filters)


def count_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "stored cases" in m.value)


def test_an_empty_store_says_how_cases_get_there(db: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and "No stored cases yet" in at.info[0].value


def test_filters_narrow_the_seeded_worklist(seeded: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    total = len(expected(seeded, WorklistFilters()))
    assert count_line(at).startswith(f"**{total}** of {total}")
    assert len([b for b in at.button if b.label == "Open"]) == total

    me = DEMO_READERS[2]
    sign_in(at, me, role="reviewer")  # "me" is the signed-in reader
    at.toggle(key="wl_not_mine").set_value(True).run()
    todo = expected(seeded, WorklistFilters(reviewer=me, not_reviewed_by_me=True))
    assert 0 < len(todo) < total and count_line(at).startswith(f"**{len(todo)}**")

    at.toggle(key="wl_not_mine").set_value(False)
    at.toggle(key="wl_readers").set_value(True).run()
    between = expected(seeded, WorklistFilters(reader_disagreement=True))
    assert count_line(at).startswith(f"**{len(between)}**")

    at.toggle(key="wl_readers").set_value(False)
    at.toggle(key="wl_low").set_value(True).run()  # the slider is enabled with its toggle
    at.slider(key="wl_threshold").set_value(0.6).run()
    assert count_line(at).startswith(f"**{len(expected(seeded, WorklistFilters(max_confidence=0.6)))}**")

    at.toggle(key="wl_low").set_value(False)
    at.selectbox(key="wl_task").select("cxr").run()
    at.selectbox(key="wl_model").select("manet-demo-scripted").run()
    at.selectbox(key="wl_version").select("1.1").run()
    assert not at.exception
    one = expected(seeded, WorklistFilters(task="cxr", model_name="manet-demo-scripted", model_version="1.1"))
    assert count_line(at).startswith(f"**{len(one)}**") and len(one) > 0


def test_opening_a_case_shows_it_with_the_stored_result_and_blind_reviews(seeded: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/worklist.py").run()
    at.selectbox(key="wl_task").select("cxr").run()
    row = expected(seeded, WorklistFilters(task="cxr"))[0]
    at.button(key=f"open_cxr_{row.case.case_hash}").click().run()
    assert not at.exception
    assert at.radio(key="cxr_source").value == "From the worklist"
    assert any(h.value.startswith("Prediction:") for h in at.subheader)
    assert any(h.value == "Earlier reads of this case" for h in at.subheader)
    # the seeded case's stored result names a scripted model: the page says the versions differ
    assert any("The stored result came from manet-demo-scripted" in w.value for w in at.warning)
    stored = next(d.value for d in at.dataframe if "Class" in d.value.columns)
    assert list(stored.columns)[1].startswith("Stored (manet-demo-scripted") and list(stored.columns)[2].startswith("Now (")
    toggle = at.toggle(key="cxr_show_others")
    assert toggle.value is False and f"({len(row.reviews)})" in toggle.label
    assert not [d for d in at.dataframe if "Reader" in d.value.columns]  # blind until asked ("me" read none of it)
    toggle.set_value(True)
    at.switch_page("pages/chest_xray.py").run()  # AppTest would rerun the page last named by switch_page (the worklist)
    assert at.radio(key="cxr_source").value == "From the worklist"
    shown = next(d.value for d in at.dataframe if "Reader" in d.value.columns)
    assert sorted(shown["Reader"]) == sorted(r.reviewer for r in row.reviews)


def test_a_saved_review_keeps_its_case_and_the_page_lists_my_reviews(db: Path) -> None:
    at = AppTest.from_file(str(REPO / "pages" / "chest_xray.py"), default_timeout=180).run()
    at.radio(key="cxr_source").set_value("Synthetic demo case").run()
    sign_in(at, "dr-zoe", role="reviewer")
    at.radio[1].set_value("disagree")
    at.selectbox(key="corrected_label").set_value("normal")
    save_button(at).click().run()
    assert not at.exception and any("Review saved" in s.value for s in at.success)
    assert not at.warning or all("not kept" not in w.value for w in at.warning)
    with ReviewStore(f"sqlite:///{db}") as store:
        review = store.current_reviews()[0]
        stored = CaseStore(store, db.parent / "cases", retention_days=365).list_cases()
    assert [(c.case_hash, c.task, c.model_name, c.predicted_label) for c in stored] == [
        (review.case_hash, "cxr", review.model_name, review.predicted_label)]
    assert len(list((db.parent / "cases").glob("*/*.npz"))) == 1
    at.run()  # the page now knows the case: the reviewer's own review is listed, others' toggle shows none
    assert any(h.value == "Earlier reads of this case" for h in at.subheader)
    assert any("Your earlier reviews" in c.value for c in at.caption)
    assert at.toggle(key="cxr_show_others").label == "Show other readers' reviews (0)"


def reopen_from_the_worklist(at: AppTest, task: str, source_key: str) -> None:
    """What the worklist's Open button leaves in the session, then the task's page again (same session)."""
    with ReviewStore(f"sqlite:///{os.environ['CHEST_REVIEW_DB']}") as store:
        (review,) = store.current_reviews()
    at.session_state["open_case"] = {"case_hash": review.case_hash, "task": task}
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key=source_key).value == "From the worklist"
    assert any(h.value == "Earlier reads of this case" for h in at.subheader)
    assert not any("The stored result came from" in w.value for w in at.warning)  # the same model as when saved
    assert any("Stored result:" in c.value for c in at.caption)


def save_button(at: AppTest):
    return next(button for button in at.button if button.label == "Save review")


def save_a_review(at: AppTest, reviewer: str) -> None:
    sign_in(at, reviewer, role="reviewer")  # the review is saved under the signed-in name
    save_button(at).click().run()
    assert not at.exception and any("Review saved" in s.value for s in at.success)


def test_a_ct_slice_is_kept_and_reopened_with_its_hounsfield_units(db: Path) -> None:
    at = AppTest.from_file(str(REPO / "pages" / "ct_slice.py"), default_timeout=180).run()
    at.radio(key="ct_source").set_value("Synthetic demo case").run()
    save_a_review(at, "dr-ct")
    reopen_from_the_worklist(at, "ct-slice", "ct_source")
    assert at.selectbox(key="ct_window").options  # windowing works: the HU came back with the pixels


@pytest.fixture
def volume_classifiers(monkeypatch, tmp_path: Path, tmp_path_factory, bundled_weights_dir, db: Path) -> Path:
    from tests.ct_volume_registry import ct_volume_registry

    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(ct_volume_registry(bundled_weights_dir, tmp_path_factory.mktemp("cv-reg"))))
    st.cache_resource.clear()
    return db


def test_a_ct_volume_is_kept_and_reopened(volume_classifiers: Path) -> None:
    at = AppTest.from_file(str(REPO / "pages" / "ct_volume.py"), default_timeout=300).run()
    at.radio(key="cv_source").set_value("Synthetic demo volume").run()
    save_a_review(at, "dr-volume")
    with ReviewStore(f"sqlite:///{volume_classifiers}") as store:
        (case,) = CaseStore(store, volume_classifiers.parent / "cases", retention_days=365).list_cases()
    assert case.task == "ct-volume" and "+" in case.model_name
    reopen_from_the_worklist(at, "ct-volume", "cv_source")  # same HU and spacing: same case hash, kept analysis
