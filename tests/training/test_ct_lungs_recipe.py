"""The ct-lungs recipe end to end on a generated CT pack: train, test report, export the registry accepts."""

import json

from core.registry import Registry
from training.__main__ import main as training_main
from tests.training.ct_pack import write_ct_pack


def test_ct_lungs_smoke_run_reports_and_exports(tmp_path):
    pack = write_ct_pack(tmp_path / "pack")
    run, weights = tmp_path / "run", tmp_path / "weights"
    training_main(["ct-lungs", "--profile", "smoke", "--data", str(pack), "--out", str(run), "--export", str(weights)])

    result = json.loads((run / "segmenter_test.json").read_text())
    assert result["sizes"] == {"train": 6, "val": 3, "test": 3}
    assert 0.0 <= result["test"]["dice"] <= 1.0 and result["test"]["n"] == 3
    assert "Test split" in (run / "report.md").read_text()
    card = Registry.open(weights).card("ct-lungs-resunet")
    assert card.task == "ct-lung-segmentation" and card.input_kind == "grey" and card.input_size == 32
