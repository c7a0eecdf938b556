"""pages/agreement.py through Streamlit's AppTest, on a real SQLite review log with three readers."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.reviews import ReviewInput, ReviewStore

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "agreement.py")
PROBS = {"normal": 0.2, "covid": 0.7, "tb": 0.02, "bacterial": 0.05, "viral": 0.03}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def review(reviewer: str, case: str, corrected: str | None = None, task: str = "cxr") -> ReviewInput:
    return ReviewInput(reviewer=reviewer, case_hash=sha(case), model_name="manet", model_version="1.0",
                       weights_sha256=sha("weights"), predicted_probabilities=PROBS, predicted_label="covid",
                       verdict="disagree" if corrected else "agree", corrected_label=corrected, confidence=4, task=task)


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "reviews.sqlite"
    monkeypatch.delenv("CHEST_REVIEW_DB_URL", raising=False)
    monkeypatch.setenv("CHEST_REVIEW_DB", str(path))
    st.cache_resource.clear()
    yield f"sqlite:///{path}"
    st.cache_resource.clear()


def fill(url: str, reviews: list[ReviewInput]) -> None:
    days = iter(datetime(2024, 5, 1, tzinfo=timezone.utc) + timedelta(days=3 * i) for i in range(100))
    with ReviewStore(url, clock=lambda: next(days)) as store:
        for item in reviews:
            store.add_review(item)


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    return at


def test_an_empty_log_says_so(db_url: str) -> None:
    at = run_page()
    assert "No reviews yet" in at.info[0].value


def test_model_agreement_kappa_and_the_cases_driving_disagreement(db_url: str) -> None:
    fill(db_url, [review("Ann", "c1"), review("Bob", "c1"), review("Cy", "c1"),
                  review("Ann", "c2"), review("Bob", "c2", "viral"), review("Cy", "c2", "viral"),
                  review("Ann", "c3", "normal"), review("Bob", "c3", "normal"), review("Cy", "c3"),
                  review("Ann", "ct-case", task="ct-slice")])
    at = run_page()
    assert at.selectbox(key="ag_task").options == ["Chest X-ray", "CT slice"]
    metric = at.metric[0]
    assert metric.label == "manet 1.0" and metric.value == "56% agreement"  # 5 of 9 reader labels are the model's
    kappas = at.metric[1:]
    assert [m.label.split(":")[0] for m in kappas] == ["Cohen's kappa"] * 3 + ["Fleiss' kappa"]
    assert kappas[0].label == "Cohen's kappa: Ann, Bob" and kappas[3].label == "Fleiss' kappa: Ann, Bob, Cy"
    # Ann and Bob read c1 covid/covid, c2 covid/viral, c3 normal/normal: p_o 2/3, p_e 2/3*1/3 + 1/3*1/3 = 1/3,
    # kappa (2/3 - 1/3) / (1 - 1/3) = 0.5 (hand-computed)
    assert kappas[0].value == "0.50"
    assert all("3 cases" in caption.value for caption in at.caption if caption.value.endswith(")") and "cases ·" in caption.value)
    shown = " ".join(block.value for block in at.markdown)
    assert sha("c2")[:12] in shown and sha("c3")[:12] in shown and sha("c1")[:12] not in shown  # the cases driving it
    assert "readers · vs model" in shown
    assert "not stored" in " ".join(caption.value for caption in at.caption)  # no case store entry: no Open button
    at.selectbox(key="ag_task").select("ct-slice").run()
    assert at.metric[0].value == "100% agreement" and "No case has been read by two readers" in at.info[0].value
    assert "Every reader agrees" in at.success[0].value
