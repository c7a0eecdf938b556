"""The pages say whether the probabilities are calibrated, and the model cards draw the reliability diagram
(AppTest, tiny random-weight registries, one copy given a temperature)."""

import shutil
from dataclasses import replace
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.registry import Registry

PAGES = Path(__file__).resolve().parents[2] / "pages"
CALIBRATION = {
    "temperature": 2.5, "fitted_on": "val, 40 images", "evaluated_on": "test, 30 images", "bins": 15,
    "ece_before": 0.2, "ece_after": 0.05,
    "reliability": {key: [{"low": b / 15, "high": (b + 1) / 15, "n": 5 if b == bin_ else 0,
                           "confidence": 0.9 if b == bin_ else None, "accuracy": 0.7 if b == bin_ else None}
                          for b in range(15)] for key, bin_ in (("before", 13), ("after", 10))},
}


def calibrated(source, target, name):
    shutil.copytree(source, target)
    registry = Registry.open(target)
    registry.write_card(replace(registry.card(name), calibration=CALIBRATION))
    return target


def captions(app) -> str:
    return " ".join(c.value for c in app.caption)


def test_xray_page_says_calibrated_and_draws_the_reliability_diagram(registry_env, tiny_registry_dir, tmp_path):
    registry_env(calibrated(tiny_registry_dir, tmp_path / "r", "tiny-cls"))
    app = AppTest.from_file(str(PAGES / "chest_xray.py"), default_timeout=120).run()
    app.radio(key="cxr_source").set_value("Synthetic demo case").run()
    assert not app.exception
    assert "Probabilities: calibrated (temperature 2.5 fitted on val, 40 images)." in captions(app)
    markdown = " ".join(m.value for m in app.markdown)
    assert "0.2000 before → 0.0500 after" in markdown
    charts = [c for c in app.get("plotly_chart") if "Reliability" in c.proto.spec]
    assert len(charts) == 1


def test_pages_say_uncalibrated_without_a_temperature(registry_env, tiny_registry_dir, tiny_ct_registry_dir):
    registry_env(tiny_registry_dir)
    app = AppTest.from_file(str(PAGES / "chest_xray.py"), default_timeout=120).run()
    app.radio(key="cxr_source").set_value("Synthetic demo case").run()
    assert not app.exception and "Probabilities: uncalibrated" in captions(app)
    registry_env(tiny_ct_registry_dir)
    app = AppTest.from_file(str(PAGES / "ct_slice.py"), default_timeout=180).run()
    app.radio(key="ct_source").set_value("Synthetic demo case").run()
    assert not app.exception and "Probabilities: uncalibrated" in captions(app)


def test_ct_slice_page_says_calibrated(registry_env, tiny_ct_registry_dir, tmp_path):
    registry_env(calibrated(tiny_ct_registry_dir, tmp_path / "r", "tiny-ct-fusion"))
    app = AppTest.from_file(str(PAGES / "ct_slice.py"), default_timeout=180).run()
    app.radio(key="ct_source").set_value("Synthetic demo case").run()
    assert not app.exception
    text = captions(app)
    assert "Probabilities: calibrated (temperature 2.5" in text and "no temperature" in text  # the branches are raw


def test_model_cards_page_draws_the_reliability_diagram(registry_env, tiny_registry_dir, tmp_path):
    registry_env(calibrated(tiny_registry_dir, tmp_path / "r", "tiny-cls"))
    app = AppTest.from_file(str(PAGES / "model_cards.py"), default_timeout=60).run()
    assert not app.exception
    assert len([c for c in app.get("plotly_chart") if "Reliability" in c.proto.spec]) == 1
