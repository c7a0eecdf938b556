"""The COVID-CXNet recipe end to end on the synthetic pack: every experiment, the audit and the report."""

import json

from training.__main__ import main as training_main


def test_recipe_runs_every_experiment_and_the_shortcut_audit(tmp_path, synthetic_pack):
    run = tmp_path / "run"
    training_main(["covid-cxnet", "--profile", "smoke", "--data", str(synthetic_pack), "--out", str(run)])
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
    for name in ("confusion-cxnet-binary.png", "roc-cxnet-three.png", "curves.png", "gradcam.png"):
        assert (run / name).is_file(), name
