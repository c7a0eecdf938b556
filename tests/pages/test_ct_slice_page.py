"""The CT slice page in AppTest: a synthetic demo case with toy CT models, windowing, a review recorded as ct-slice."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.reviews import ReviewStore

CT_SLICE = str(Path(__file__).resolve().parents[2] / "pages" / "ct_slice.py")


@pytest.fixture
def env(monkeypatch, tmp_path, tiny_ct_registry_dir):
    import streamlit as st

    db = tmp_path / "reviews.sqlite"
    monkeypatch.setenv("CHEST_REVIEW_DB", str(db))
    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(tiny_ct_registry_dir))
    st.cache_resource.clear()  # the registry and pipelines are cached per process: start from this registry
    yield db
    st.cache_resource.clear()


def test_demo_case_windows_burden_and_review(env):
    app = AppTest.from_file(CT_SLICE, default_timeout=180).run()
    assert not app.exception
    app.radio(key="ct_source").set_value("Synthetic demo case").run()
    assert not app.exception
    assert any("SYNTHETIC" in w.value for w in app.warning)
    assert any(h.value.startswith("P(COVID-19):") for h in app.subheader)
    assert any(m.label == "Infected lung" for m in app.metric)
    app.selectbox(key="ct_window").set_value("mediastinum").run()
    assert not app.exception
    app.selectbox(key="ct_window").set_value("free").run()
    app.number_input(key="ct_level").set_value(40.0).run()
    assert not app.exception

    app.radio[1].set_value("disagree")
    app.selectbox(key="corrected_label").set_value("uncertain")
    app.button[0].click().run()
    assert not app.exception
    assert any("Review saved" in s.value for s in app.success)
    (review,) = ReviewStore(f"sqlite:///{env}").current_reviews()
    assert (review.task, review.model_name, review.corrected_label) == ("ct-slice", "tiny-ct-fusion", "uncertain")


def test_the_page_opens_on_the_upload_form_with_instructions(env):
    app = AppTest.from_file(CT_SLICE, default_timeout=60).run()
    assert not app.exception
    assert any("Upload a CT slice" in i.value for i in app.info)
    assert any("Research use only" in c.value for c in app.caption)
