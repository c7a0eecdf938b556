"""A card's temperature reaches what the app and ``core predict`` show; cards without one are unchanged.

Tiny random-weight registries (tests/conftest.py), copied and given a ``calibration`` entry by hand;
the probabilities are checked against softmax / sigmoid of the result's raw logits computed here.
"""

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from core.errors import ModelError
from core.model_card import card_markdown
from core.phantoms import make_phantom
from core.registry import ModelCard, Registry
from core.study import Study

T = 2.5
CALIBRATION = {
    "method": "temperature scaling", "temperature": T, "fitted_on": "val, 40 images", "evaluated_on": "test, 30 images",
    "bins": 15, "ece_before": 0.2, "ece_after": 0.05, "nll_before": 1.2, "nll_after": 0.9,
    "reliability": {
        "before": [{"low": b / 15, "high": (b + 1) / 15, "n": 10 if b in (13, 14) else 0,
                    "confidence": 0.9 if b in (13, 14) else None, "accuracy": 0.6 if b in (13, 14) else None} for b in range(15)],
        "after": [{"low": b / 15, "high": (b + 1) / 15, "n": 10 if b in (9, 10) else 0,
                   "confidence": 0.65 if b in (9, 10) else None, "accuracy": 0.6 if b in (9, 10) else None} for b in range(15)],
    },
}


def calibrated_copy(source, target, names):
    shutil.copytree(source, target)
    registry = Registry.open(target)
    for name in names:
        registry.write_card(replace(registry.card(name), calibration=dict(CALIBRATION)))
    return target


@pytest.fixture(scope="module")
def calibrated_registry_dir(tiny_registry_dir, tmp_path_factory):
    return calibrated_copy(tiny_registry_dir, tmp_path_factory.mktemp("cal") / "registry", ["tiny-cls", "tiny-lung-only"])


@pytest.fixture(scope="module")
def calibrated_ct_registry_dir(tiny_ct_registry_dir, tmp_path_factory):
    return calibrated_copy(tiny_ct_registry_dir, tmp_path_factory.mktemp("cal") / "ct-registry", ["tiny-ct-fusion"])


def hand_softmax(z):
    e = np.exp(np.asarray(z, float) - np.max(z))
    return e / e.sum()


def phantom_study(label="covid"):
    return Study(make_phantom(label, seed=3, size=128).pixels, "png", synthetic=True)


def test_softmax_classifier_shows_softmax_of_logits_over_t(tiny_registry_dir, calibrated_registry_dir):
    from core.pipelines.cxr import CxrPipeline

    study = phantom_study()
    plain = CxrPipeline(Registry.open(tiny_registry_dir), classifier="tiny-cls").analyse(study, explain=False)
    cal = CxrPipeline(Registry.open(calibrated_registry_dir), classifier="tiny-cls").analyse(study)
    assert np.allclose(plain.logits, cal.logits)  # the same network, raw outputs
    assert np.allclose(list(plain.probabilities.values()), hand_softmax(plain.logits), atol=1e-6)
    assert np.allclose(list(cal.probabilities.values()), hand_softmax(cal.logits / T), atol=1e-6)
    assert cal.predicted_label == plain.predicted_label and cal.gradcam is not None


def test_sigmoid_classifier_shows_sigmoid_of_logit_over_t(calibrated_registry_dir):
    from core.pipelines.cxr import CxrPipeline

    result = CxrPipeline(Registry.open(calibrated_registry_dir), classifier="tiny-lung-only").analyse(phantom_study())
    z = float(result.logits[0])
    p = 1 / (1 + np.exp(-z / T))
    assert result.probabilities["covid"] == pytest.approx(p, abs=1e-6)
    assert result.probabilities["non-covid"] == pytest.approx(1 - p, abs=1e-6)


def test_ct_slice_fusion_probability_uses_the_temperature(tiny_ct_registry_dir, calibrated_ct_registry_dir):
    from core.ct_phantoms import make_ct_phantom
    from core.pipelines.ct_slice import CtSlicePipeline

    study = make_ct_phantom("covid", seed=1, size=128).to_study()
    plain = CtSlicePipeline(Registry.open(tiny_ct_registry_dir)).analyse(study)
    cal = CtSlicePipeline(Registry.open(calibrated_ct_registry_dir)).analyse(study)
    z = float(cal.logits[0])
    assert float(plain.logits[0]) == pytest.approx(z, abs=1e-5)
    assert plain.prob_covid == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)  # as before: the fusion's sigmoid
    assert cal.prob_covid == pytest.approx(1 / (1 + np.exp(-z / T)), abs=1e-6)
    assert cal.probabilities["non-covid"] == pytest.approx(1 - cal.prob_covid)
    assert cal.branch_probabilities == pytest.approx(plain.branch_probabilities)  # branches: no temperature


def test_core_predict_writes_calibrated_probabilities_and_the_same_columns(calibrated_registry_dir, tmp_path, capsys):
    from PIL import Image

    from core.__main__ import main

    image = tmp_path / "case.png"
    Image.fromarray((make_phantom("tb", seed=2, size=128).pixels * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out.csv"
    assert main(["--weights", str(calibrated_registry_dir), "--classifier", "tiny-cls", "predict", str(image),
                 "--out", str(out)]) == 0
    assert "probabilities: calibrated (temperature 2.5 fitted on val, 40 images)" in capsys.readouterr().out
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        (row,) = list(reader)
    assert "logits" not in reader.fieldnames and reader.fieldnames[:3] == ["file", "status", "predicted_label"]

    from core.batch import predict_rows
    from core.pipelines.cxr import CxrPipeline

    pipeline = CxrPipeline(Registry.open(calibrated_registry_dir), classifier="tiny-cls")
    (direct,) = list(predict_rows("cxr", pipeline, [image], progress=False))
    expected = hand_softmax(np.array(direct["logits"]) / T)
    assert [float(row[f"prob_{c}"]) for c in pipeline.classes] == pytest.approx(expected, abs=1e-5)


def test_old_manifests_load_and_stay_byte_for_byte(tiny_registry_dir, tmp_path):
    shutil.copytree(tiny_registry_dir, tmp_path / "r")
    manifest = tmp_path / "r" / "manifest.json"
    before = manifest.read_text()
    assert "calibration" not in before
    registry = Registry.open(tmp_path / "r")
    assert all(card.calibration is None for card in registry.cards())
    registry.write_card(registry.card("tiny-cls"))  # rewriting an uncalibrated card adds nothing
    assert manifest.read_text() == before


def test_calibration_round_trips_through_the_manifest(calibrated_registry_dir):
    card = Registry.open(calibrated_registry_dir).card("tiny-cls")
    assert card.calibration == CALIBRATION
    entries = {e["name"]: e for e in json.loads((calibrated_registry_dir / "manifest.json").read_text())["models"]}
    assert entries["tiny-cls"]["calibration"]["temperature"] == T and "calibration" not in entries["tiny-seg"]


def test_a_bad_temperature_is_refused(tiny_registry_dir, tmp_path):
    shutil.copytree(tiny_registry_dir, tmp_path / "r")
    registry = Registry.open(tmp_path / "r")
    registry.write_card(replace(registry.card("tiny-cls"), calibration={"temperature": -1.0}))
    with pytest.raises(ModelError, match="temperature"):
        Registry.open(tmp_path / "r")


def test_model_card_says_which_probabilities_and_shows_ece(calibrated_registry_dir):
    registry = Registry.open(calibrated_registry_dir)
    text = card_markdown(registry.card("tiny-cls"))
    assert "calibrated" in text and "T = 2.500" in text and "0.2000 before → 0.0500 after" in text
    assert "| 0.87–0.93 | 10 | 0.900 | 0.600 | 0 |  |  |" in text  # a reliability row: bin 13, before only
    assert "did not lower" not in text
    worse = replace(registry.card("tiny-cls"), calibration={**CALIBRATION, "ece_before": 0.04, "ece_after": 0.05})
    assert "did not lower the calibration error on test" in card_markdown(worse)
    assert "uncalibrated" in card_markdown(registry.card("tiny-cxnet-three"))
    assert "Probabilities" not in card_markdown(registry.card("tiny-seg"))  # segmenters: no such line


def test_ct_volume_cards_still_render():
    metrics = {"test": {"n": 10, "auc": 0.9, "accuracy": 0.8, "sensitivity": 0.7, "specificity": 0.9, "f1": 0.75}}
    card = ModelCard(name="v", version="1", task="ct-volume-classification", architecture="resnet3d34_attention",
                     architecture_config={}, classes=["cap", "covid"], input_size=112, preprocessing="", files={},
                     training_data="", training_command="", metrics=metrics, input_kind="volume", output="sigmoid",
                     input_config={"shape": [64, 96, 112]})
    text = card_markdown(card)
    assert "community-acquired pneumonia" in text and "uncalibrated" in text and "training calibrate" not in text
    assert "T = 1.700" in card_markdown(replace(card, calibration={"temperature": 1.7, "fitted_on": "val, 9 volumes"}))


def test_reliability_figure():
    from core.viz import reliability_figure

    figure = reliability_figure(CALIBRATION)
    assert [trace.name for trace in figure.data] == ["perfect calibration", "before (ECE 0.200)", "after (ECE 0.050)"]
    assert list(figure.data[1].x) == [0.9, 0.9] and list(figure.data[2].y) == [0.6, 0.6]
    assert reliability_figure({"temperature": 1.0}) is None
