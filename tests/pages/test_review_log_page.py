"""pages/review_log.py through Streamlit's AppTest, on a real SQLite file named by CHEST_REVIEW_DB."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

import streamlit as st
from streamlit.testing.v1 import AppTest

from core.reviews import ReviewInput, ReviewStore

PAGE = str(REPO_ROOT / "pages" / "review_log.py")
PROBS = {"normal": 0.2, "covid": 0.7, "tb": 0.02, "bacterial": 0.05, "viral": 0.03}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def review(**changes) -> ReviewInput:
    values = dict(
        reviewer="Ann",
        case_hash=sha("case-a"),
        model_name="manet",
        model_version="1.0",
        weights_sha256=sha("weights"),
        predicted_probabilities=PROBS,
        predicted_label="covid",
        verdict="agree",
        confidence=4,
    )
    values.update(changes)
    return ReviewInput(**values)


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "reviews.sqlite"
    monkeypatch.delenv("CHEST_REVIEW_DB_URL", raising=False)
    monkeypatch.setenv("CHEST_REVIEW_DB", str(path))
    st.cache_resource.clear()
    yield path
    st.cache_resource.clear()


@pytest.fixture
def filled(db_path: Path) -> dict:
    days = iter(datetime(2024, 5, d, 9, 30, tzinfo=timezone.utc) for d in range(1, 10))
    with ReviewStore(f"sqlite:///{db_path}", clock=lambda: next(days)) as store:
        ann = store.add_review(review())
        bob = store.add_review(
            review(reviewer="Bob", case_hash=sha("case-b"), verdict="disagree", corrected_label="viral",
                   where_wrong="missed bilateral ground-glass")
        )
        amended = store.amend_review(ann.review_uid, ann.to_input(note="checked again", confidence=5))
    return {"ann": ann, "bob": bob, "amended": amended}


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    return at


def table(at: AppTest, index: int = 0):
    return at.dataframe[index].value


def test_table_lists_current_reviews(filled: dict) -> None:
    at = run_page()
    assert not at.error
    df = table(at)
    assert len(df) == 2
    assert sorted(df["Reviewer"]) == ["Ann", "Bob"]
    ann = df[df["Reviewer"] == "Ann"].iloc[0]
    assert ann["Version"] == 2 and ann["Note"] == "checked again"
    assert df[df["Reviewer"] == "Bob"].iloc[0]["Where wrong"] == "missed bilateral ground-glass"
    assert at.download_button[0].label == "Download CSV"
    assert at.checkbox(key="rl_include_history").label == "Include superseded versions"


def test_filters_narrow_the_table(filled: dict) -> None:
    at = run_page()
    at.selectbox(key="rl_reviewer").select("Bob").run()
    assert list(table(at)["Reviewer"]) == ["Bob"]

    at.selectbox(key="rl_reviewer").select("All")
    at.selectbox(key="rl_verdict").select("agree").run()
    assert list(table(at)["Reviewer"]) == ["Ann"]

    at.selectbox(key="rl_verdict").select("All")
    at.selectbox(key="rl_corrected").select("viral").run()
    assert list(table(at)["Reviewer"]) == ["Bob"]

    at.selectbox(key="rl_corrected").select("All")
    at.text_input(key="rl_case_prefix").input(sha("case-a")[:8]).run()
    assert list(table(at)["Reviewer"]) == ["Ann"]

    at.text_input(key="rl_case_prefix").input("")
    at.date_input(key="rl_from").set_value(date(2024, 5, 3)).run()  # Ann's amendment is dated May 3
    assert list(table(at)["Reviewer"]) == ["Ann"]

    at.date_input(key="rl_to").set_value(date(2024, 5, 2)).run()  # end before start
    assert at.error and "before the start" in at.error[0].value
    assert not at.exception

    at.date_input(key="rl_from").set_value(None)
    at.date_input(key="rl_to").set_value(None)
    at.selectbox(key="rl_model").select("manet")
    at.selectbox(key="rl_reviewer").select("Ann")
    at.selectbox(key="rl_verdict").select("disagree").run()
    assert not at.dataframe and "No reviews match" in at.info[0].value


def test_history_of_a_selected_review(filled: dict) -> None:
    at = run_page()
    assert len(at.dataframe) == 1
    at.selectbox(key="rl_history_uid").select(filled["ann"].review_uid).run()
    history = table(at, 1)
    assert list(history["Version"]) == [1, 2]
    assert list(history["Note"]) == ["", "checked again"]


def test_download_uses_filters_and_history_checkbox(filled: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = ReviewStore.export_csv

    def spy(self, filters=None, include_history=False):
        text = original(self, filters, include_history=include_history)
        calls.append((filters, include_history, text))
        return text

    monkeypatch.setattr(ReviewStore, "export_csv", spy)
    at = run_page()
    at.selectbox(key="rl_reviewer").select("Ann").run()
    filters, include_history, text = calls[-1]
    assert filters.reviewer == "Ann" and include_history is False
    assert len(text.splitlines()) == 2  # header + Ann's current version

    at.checkbox(key="rl_include_history").check().run()
    filters, include_history, text = calls[-1]
    assert include_history is True and len(text.splitlines()) == 3


def test_empty_log_shows_info(db_path: Path) -> None:
    at = run_page()
    assert not at.error and not at.dataframe
    assert "No reviews" in at.info[0].value


def test_broken_database_shows_error_not_traceback(db_path: Path) -> None:
    db_path.write_bytes(b"definitely not sqlite" * 200)
    at = run_page()
    assert at.error and "damaged" in at.error[0].value
    assert not at.dataframe
    assert db_path.read_bytes() == b"definitely not sqlite" * 200


# ---------------------------------------------------------------------------------------------
# task: the page a review came from

CT_PROBS = {"non-covid": 0.3, "covid": 0.7}


@pytest.fixture
def mixed(db_path: Path) -> dict:
    """One chest X-ray review and two CT-slice reviews (one amended)."""
    days = iter(datetime(2024, 6, d, 9, 30, tzinfo=timezone.utc) for d in range(1, 10))
    with ReviewStore(f"sqlite:///{db_path}", clock=lambda: next(days)) as store:
        xray = store.add_review(review())
        ct = store.add_review(
            review(reviewer="Cy", case_hash=sha("ct-a"), model_name="multisource-fusion",
                   predicted_probabilities=CT_PROBS, task="ct-slice")
        )
        ct_bob = store.add_review(
            review(reviewer="Bob", case_hash=sha("ct-b"), model_name="multisource-fusion",
                   predicted_probabilities=CT_PROBS, verdict="disagree", corrected_label="non-covid",
                   task="ct-slice")
        )
        store.amend_review(ct.review_uid, ct.to_input(note="second look"))
    return {"xray": xray, "ct": ct, "ct_bob": ct_bob}


def test_task_column_and_filter(mixed: dict) -> None:
    at = run_page()
    df = table(at)
    assert dict(zip(df["Reviewer"], df["Task"])) == {"Ann": "Chest X-ray", "Cy": "CT slice", "Bob": "CT slice"}
    task_filter = at.selectbox(key="rl_task")
    assert task_filter.label == "Task"
    assert task_filter.options == ["All", "Chest X-ray", "CT slice"]  # only the tasks in the log

    task_filter.select("ct-slice").run()
    assert sorted(table(at)["Reviewer"]) == ["Bob", "Cy"]
    assert set(table(at)["Task"]) == {"CT slice"}

    at.selectbox(key="rl_task").select("cxr").run()
    assert list(table(at)["Reviewer"]) == ["Ann"]

    at.selectbox(key="rl_verdict").select("disagree").run()  # the task filter combines with the others
    assert not at.dataframe and "No reviews match" in at.info[0].value


def test_csv_download_has_the_task_and_follows_the_task_filter(
    mixed: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = ReviewStore.export_csv

    def spy(self, filters=None, include_history=False):
        text = original(self, filters, include_history=include_history)
        calls.append((filters, text))
        return text

    monkeypatch.setattr(ReviewStore, "export_csv", spy)
    at = run_page()
    _, text = calls[-1]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["task"] for r in rows) == ["ct-slice", "ct-slice", "cxr"]

    at.selectbox(key="rl_task").select("ct-slice").run()
    filters, text = calls[-1]
    assert filters.task == "ct-slice"
    assert {r["task"] for r in csv.DictReader(io.StringIO(text))} == {"ct-slice"}
    assert at.download_button[0].label == "Download CSV"


def test_history_of_a_ct_review_names_its_task(mixed: dict) -> None:
    at = run_page()
    at.selectbox(key="rl_history_uid").select(mixed["ct"].review_uid).run()
    history = table(at, 1)
    assert list(history["Version"]) == [1, 2] and set(history["Task"]) == {"CT slice"}
    assert any("CT slice" in option for option in at.selectbox(key="rl_history_uid").options)


def test_a_ct_volume_review_shows_its_slice_in_the_table_and_the_csv(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = ReviewStore.export_csv

    def spy(self, filters=None, include_history=False):
        calls.append(original(self, filters, include_history=include_history))
        return calls[-1]

    monkeypatch.setattr(ReviewStore, "export_csv", spy)
    with ReviewStore(f"sqlite:///{db_path}") as store:
        store.add_review(review())
        store.add_review(review(reviewer="Vi", case_hash=sha("volume"), model_name="dual-sampling",
                                predicted_probabilities={"cap": 0.2, "covid": 0.8}, verdict="disagree",
                                corrected_label="cap", task="ct-volume", slice_view="coronal", slice_index=88))
    at = run_page()
    df = table(at)
    assert dict(zip(df["Reviewer"], df["Slice"])) == {"Ann": "", "Vi": "coronal 88"}
    assert dict(zip(df["Reviewer"], df["Task"]))["Vi"] == "CT volume"
    rows = {r["reviewer"]: r for r in csv.DictReader(io.StringIO(calls[-1]))}
    assert (rows["Vi"]["slice_view"], rows["Vi"]["slice_index"]) == ("coronal", "88")
    assert (rows["Ann"]["slice_view"], rows["Ann"]["slice_index"]) == ("", "")
