"""Both image pages offer the bundled real demo cases before the synthetic fallback, and show each case's
true label, source and credit beside the model's answer (AppTest, tiny random-weight registries)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.classes import class_title
from core.demo_cases import demo_cases

PAGES = Path(__file__).resolve().parents[2] / "pages"


def shown_text(app) -> str:
    return " ".join(e.value for e in [*app.markdown, *app.caption, *app.subheader])


def test_xray_page_shows_the_true_label_and_source_of_a_real_case(registry_env, tiny_registry_dir):
    registry_env(tiny_registry_dir)
    case = next(c for c in demo_cases("cxr") if c.label == "tb")
    app = AppTest.from_file(str(PAGES / "chest_xray.py"), default_timeout=120).run()
    assert app.radio(key="cxr_source").options == ["Upload a file", "Real demo case", "Synthetic demo case"]
    app.radio(key="cxr_source").set_value("Real demo case").run()
    app.selectbox(key="cxr_demo_case").set_value(case.file).run()
    assert not app.exception and not app.error
    text = shown_text(app)
    assert any(h.value.startswith("Prediction:") for h in app.subheader)
    assert f"True label: {class_title('tb')}" in text and f"source: {case.source}" in text
    assert "model's answer" in text and case.licence in text and "Jaeger" in text
    assert not any("SYNTHETIC" in w.value for w in app.warning)


def test_ct_slice_page_shows_the_true_label_and_source_of_a_real_case(registry_env, tiny_ct_registry_dir):
    registry_env(tiny_ct_registry_dir)
    case = demo_cases("ct-slice")[0]
    app = AppTest.from_file(str(PAGES / "ct_slice.py"), default_timeout=180).run()
    app.radio(key="ct_source").set_value("Real demo case").run()
    app.selectbox(key="ct_demo_case").set_value(case.file).run()
    assert not app.exception and not app.error
    text = shown_text(app)
    assert any(h.value.startswith("P(COVID-19):") for h in app.subheader)
    assert f"True label: {class_title('covid')}" in text and f"source: {case.source}" in text
    assert "CC BY 4.0" in text and "Ma J" in text
