"""The COVID-CXNet recipe end to end on the synthetic pack: every experiment, the audit and the report."""

import json

import numpy as np

from core.registry import Registry
from tests.training.serving import served_inputs
from training.__main__ import main as training_main
from training.adapters import read_records
from training.recipes import covid_cxnet
from training.served import served_accuracy


def test_recipe_runs_every_experiment_and_the_shortcut_audit(tmp_path, synthetic_pack):
    run = tmp_path / "run"
    weights = tmp_path / "weights"
    training_main(["covid-cxnet", "--profile", "smoke", "--data", str(synthetic_pack), "--out", str(run), "--export", str(weights)])
    summary = json.loads((run / "summary.json").read_text())
    experiments = summary["experiments"]
    assert set(experiments) == {"base-binary", "cxnet-binary", "cxnet-three", "cxnet-hierarchical", "no-lungs-control"}
    assert experiments["cxnet-binary"]["classes"] == ["normal", "covid"]
    assert experiments["cxnet-hierarchical"]["classes"] == ["normal", "pneumonia", "covid"]
    # The three-class test set: normal, bacterial, viral and covid test images (tb has no class here).
    assert experiments["cxnet-three"]["n"] == experiments["cxnet-hierarchical"]["n"] == 8
    loso = summary["leave_one_source_out"]
    assert [row["source"] for row in loso] == ["synthetic-a"]
    assert loso[0]["report"]["n"] == 15  # every image of the held-out source, whatever its split
    report = (run / "report.md").read_text()
    assert "Leave one source out" in report and "lungs blacked out" in report and "Table 6" in report
    assert "training images/s" in report and "heat-map faithfulness" in report
    for name in ("confusion-cxnet-binary.png", "roc-cxnet-three.png", "curves.png", "gradcam.png"):
        assert (run / name).is_file(), name

    # Export: the lung UNet, the binary (sigmoid) and flat three-class (softmax, histogram-matched) models,
    # served on the same enhanced lung crops they were trained on.
    registry = Registry.open(weights)
    binary, three = registry.card("covid-cxnet-binary"), registry.card("covid-cxnet-three")
    assert (binary.output, binary.classes, binary.input_kind) == ("sigmoid", ["normal", "covid"], "cxnet-roi")
    assert (three.output, three.classes) == ("softmax", ["normal", "pneumonia", "covid"])
    assert "histogram_reference" in three.files and "histogram_reference" not in binary.files
    assert three.metrics["test"]["n"] == 8
    profile = covid_cxnet.PROFILES["smoke"]
    record = next(r for r in read_records([synthetic_pack]) if r.split == "test")
    masks = covid_cxnet.lung_masks([record], registry.load_torch(registry.card("covid-cxnet-lungs")), profile)
    for card, reference in ((binary, None), (three, np.load(run / "histogram_reference.npy"))):
        trained = covid_cxnet.build_inputs([record], masks, profile, reference)[0].astype(np.float32)
        assert np.abs(served_inputs(registry, card.name, record.image) - trained).max() < 2e-3
    # The served-accuracy command scores the same test split through the app's pipeline.
    served = served_accuracy(weights, "covid-cxnet-binary", read_records([synthetic_pack]))
    assert served["n"] == binary.metrics["test"]["n"] and 0 <= served["served_accuracy"] <= 1
