"""The infnet recipe end to end on a generated CT pack: Inf-Net, the Semi-Inf-Net loop, the multi-class head."""

import json

from training.__main__ import main as training_main
from tests.training.ct_pack import write_ct_pack


def test_infnet_smoke_run_trains_every_stage_and_reports(tmp_path):
    pack = write_ct_pack(tmp_path / "pack", medseg=20, unlabelled=8)  # MedSeg: 10 test, 5 val, 5 train
    run = tmp_path / "run"
    training_main(["infnet", "--profile", "smoke", "--data", str(pack), "--out", str(run)])

    results = json.loads((run / "results.json").read_text())
    for model in ("Inf-Net", "Semi-Inf-Net"):
        assert results[model]["n"] == 3 + 10  # ma2020 test slices + the MedSeg hold-out
        assert set(results[model]["per_group"]) == {"doctor-label", "ma2020-slices"}
        assert 0.0 <= results[model]["dice"] <= 1.0
    # Algorithm 1: 8 unlabelled slices, 4 per round -> two rounds, each adding 4 pseudo-labelled slices
    assert [r["training_slices"] for r in results["semi_rounds"]] == [results["sizes"]["binary"]["train"] + 4,
                                                                      results["sizes"]["binary"]["train"] + 8]
    assert set(results["multiclass"]) >= {"ggo", "consolidation", "n"}
    report = (run / "report.md").read_text()
    assert "Inf-Net Table II shape" in report and "Semi-Inf-Net rounds" in report
