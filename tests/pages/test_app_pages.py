"""Streamlit AppTest: the pages run headless, in process, against the bundled models and a real DB file."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.reviews import ReviewStore
from tests.sign_in import DEFAULT_USER, sign_in

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
CHEST_XRAY = str(REPO / "pages" / "chest_xray.py")


@pytest.fixture
def env(monkeypatch, tmp_path, bundled_weights_dir):
    db = tmp_path / "reviews.sqlite"
    monkeypatch.setenv("CHEST_REVIEW_DB", str(db))
    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(bundled_weights_dir))
    return db


def test_home_page_says_research_only_and_lists_models(env):
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    text = " ".join(e.value for e in app.error) + " ".join(m.value for m in app.markdown)
    assert "Research use only" in text
    assert "lung-resunet" in text and "cxr-classification" in text
    assert "ct-lungs-resunet" in text and "ct-infection-segmentation" in text and "image-kind-gate" in text


def test_demo_case_analysis_and_review(env):
    app = AppTest.from_file(CHEST_XRAY, default_timeout=120).run()
    assert not app.exception
    app.radio[0].set_value("Synthetic demo case").run()
    app.selectbox(key="phantom_label").set_value("tb").run()
    assert not app.exception
    assert any("SYNTHETIC" in w.value for w in app.warning)
    assert any(h.value.startswith("Prediction:") for h in app.subheader)
    app.radio[1].set_value("disagree")
    app.selectbox(key="corrected_label").set_value("covid")
    app.button[0].click().run()
    assert not app.exception
    assert any("Review saved" in s.value for s in app.success)
    reviews = ReviewStore(f"sqlite:///{env}").current_reviews()
    assert len(reviews) == 1
    review = reviews[0]
    assert (review.reviewer, review.verdict, review.corrected_label) == (DEFAULT_USER, "disagree", "covid")
    assert review.model_name.startswith("manet-") and len(review.weights_sha256) == 64
    assert [b.label for b in app.get("download_button")] == ["Download PDF report"]  # the case with its review


def test_every_bundled_classifier_can_be_chosen_and_reviewed(env):
    """The COVID-CXNet models serve their own classes; a review records which model was reviewed."""
    app = AppTest.from_file(CHEST_XRAY, default_timeout=120).run()
    app.radio[0].set_value("Synthetic demo case").run()
    app.selectbox(key="classifier").set_value("covid-cxnet-three").run()
    assert not app.exception
    assert any(h.value.startswith("Prediction:") for h in app.subheader)
    assert app.selectbox(key="corrected_label").options == ["Normal", "Pneumonia (not COVID-19)", "COVID-19", "Other", "Uncertain"]
    app.button[0].click().run()
    assert not app.exception
    (review,) = ReviewStore(f"sqlite:///{env}").current_reviews()
    assert review.model_name == "covid-cxnet-three" and set(review.predicted_probabilities) == {"normal", "pneumonia", "covid"}


def test_the_review_is_saved_under_the_login_with_no_name_box(env):
    app = AppTest.from_file(CHEST_XRAY, default_timeout=120)
    sign_in(app, "dr.second", role="reviewer")
    app.run()
    app.radio[0].set_value("Synthetic demo case").run()
    assert "Reviewer name" not in [t.label for t in app.text_input]
    assert any("dr.second" in c.value for c in app.caption)
    app.button[0].click().run()
    assert not app.exception
    (review,) = ReviewStore(f"sqlite:///{env}").current_reviews()
    assert review.reviewer == "dr.second"


def test_model_cards_page_shows_every_bundled_model(env, bundled_weights_dir):
    from core.registry import Registry

    app = AppTest.from_file(str(REPO / "pages" / "model_cards.py"), default_timeout=60).run()
    assert not app.exception
    text = " ".join(m.value for m in app.markdown) + " ".join(e.label for e in app.expander)
    for card in Registry.open(bundled_weights_dir).cards():
        assert card.name in text
    assert "**Input kind:** `cxnet-roi` · **Output:** sigmoid · **Lung model:** covid-cxnet-lungs" in text
