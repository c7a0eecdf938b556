"""``python -m training calibrate``: fit on val through the app's pipeline, score on test, write the card's entry.

Tiny random-weight registries (copied: the command rewrites the manifest) on tiny synthetic packs.
"""

import shutil

import numpy as np
import pytest

from core.calibration import fit_temperature, probabilities, top_label_reliability
from core.registry import Registry
from tests.training.ct_pack import write_ct_pack
from training.__main__ import main
from training.calibration import ServedSplit, calibration_entry


@pytest.fixture
def registry_copy(tiny_registry_dir, tmp_path):
    return shutil.copytree(tiny_registry_dir, tmp_path / "registry")


def test_entry_from_hand_made_logits():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 1.5, (400, 3))
    labels = np.array([rng.choice(3, p=p) for p in probabilities(true, "softmax")])
    val = ServedSplit("val", 3 * true[:200], labels[:200], refused=2)  # over-confident by 3
    test = ServedSplit("test", 3 * true[200:], labels[200:], refused=0)
    entry = calibration_entry(val, test, "softmax", "cmd")
    t = fit_temperature(val.logits, val.targets, "softmax")
    assert entry["temperature"] == pytest.approx(t, abs=1e-6) and 2.2 < t < 4.0
    assert entry["fitted_on"] == "val, 200 images" and entry["refused"] == {"val": 2, "test": 0}
    before, _ = top_label_reliability(probabilities(test.logits, "softmax"), test.targets)
    after, table = top_label_reliability(probabilities(test.logits, "softmax", t), test.targets)
    assert entry["ece_before"] == pytest.approx(before, abs=1e-6) and entry["ece_after"] == pytest.approx(after, abs=1e-6)
    assert entry["ece_after"] < entry["ece_before"] and entry["nll_after"] < entry["nll_before"]
    assert [row["n"] for row in entry["reliability"]["after"]] == [row["n"] for row in table]
    assert entry["command"] == "cmd"


def test_calibrate_writes_the_entry_and_the_pipeline_serves_it(synthetic_pack, registry_copy, capsys):
    assert main(["calibrate", "--weights", str(registry_copy), "--classifier", "tiny-cls", "--data", str(synthetic_pack)]) == 0
    printed = capsys.readouterr().out
    assert "test ECE (top label, 15 bins)" in printed and "wrote the calibration of tiny-cls" in printed
    registry = Registry.open(registry_copy)
    entry = registry.card("tiny-cls").calibration
    # the synthetic pack: 5 val images (one per class), 10 test images
    assert entry["temperature"] > 0 and entry["fitted_on"] == "val, 5 images" and entry["evaluated_on"] == "test, 10 images"
    assert len(entry["reliability"]["before"]) == len(entry["reliability"]["after"]) == 15
    assert sum(row["n"] for row in entry["reliability"]["after"]) == 10
    assert registry.card("tiny-lung-only").calibration is None  # only the named card changes

    from core.phantoms import make_phantom
    from core.pipelines.cxr import CxrPipeline
    from core.study import Study

    result = CxrPipeline(registry, classifier="tiny-cls").analyse(Study(make_phantom("covid", seed=1, size=128).pixels, "png"),
                                                                  explain=False)
    z = result.logits / entry["temperature"]
    assert list(result.probabilities.values()) == pytest.approx(np.exp(z - z.max()) / np.exp(z - z.max()).sum(), abs=1e-6)


def test_a_rerun_fits_on_raw_logits_and_dry_run_leaves_the_manifest(synthetic_pack, registry_copy):
    args = ["calibrate", "--weights", str(registry_copy), "--classifier", "tiny-cls", "--data", str(synthetic_pack)]
    assert main(args) == 0
    first = Registry.open(registry_copy).card("tiny-cls").calibration["temperature"]
    manifest = (registry_copy / "manifest.json").read_text()
    assert main([*args, "--dry-run"]) == 0
    assert (registry_copy / "manifest.json").read_text() == manifest
    assert main(args) == 0  # the served T is not compounded: the fit sees the raw logits again
    assert Registry.open(registry_copy).card("tiny-cls").calibration["temperature"] == pytest.approx(first, rel=1e-4)


def test_calibrate_the_ct_slice_classifier(tiny_ct_registry_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    pack = write_ct_pack(tmp_path / "data")
    registry_dir = shutil.copytree(tiny_ct_registry_dir, tmp_path / "registry")
    assert main(["calibrate", "--weights", str(registry_dir), "--classifier", "tiny-ct-fusion", "--data", str(pack)]) == 0
    entry = Registry.open(registry_dir).card("tiny-ct-fusion").calibration
    assert entry["temperature"] > 0 and entry["fitted_on"].startswith("val, ")
    assert int(entry["evaluated_on"].split(", ")[1].split()[0]) + entry["refused"]["test"] > 0


def test_calibrate_refuses_what_it_cannot_calibrate(synthetic_pack, registry_copy, capsys):
    assert main(["calibrate", "--weights", str(registry_copy), "--classifier", "tiny-seg", "--data", str(synthetic_pack)]) == 2
    assert "lung-segmentation" in capsys.readouterr().err
    assert main(["calibrate", "--weights", str(registry_copy), "--classifier", "nope", "--data", str(synthetic_pack)]) == 2
    assert "nope" in capsys.readouterr().err
