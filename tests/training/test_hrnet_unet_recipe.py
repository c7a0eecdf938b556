"""The UNet + HRNet recipe end to end on the synthetic pack: k-fold UNet, k-fold classifiers, report."""

import json

import numpy as np

from core.registry import Registry
from tests.training.serving import served_inputs
from training.__main__ import main as training_main
from training.adapters import read_records
from training.recipes import hrnet_unet


def test_recipe_cross_validates_and_writes_tables_6_and_7(tmp_path, synthetic_pack):
    run = tmp_path / "run"
    weights = tmp_path / "weights"
    training_main(["hrnet-unet", "--profile", "smoke", "--data", str(synthetic_pack), "--out", str(run), "--export", str(weights)])
    for name in ("config.json", "segmenter_test.json", "summary.json", "report.md", "confusion.png", "roc.png",
                 "curves.png", "gradcam.png", "segmenter/fold1/best.pt", "segmenter/fold2/best.pt",
                 "classifiers/hrnet/fold2/result.json", "classifiers/timm_densenet121/fold1/result.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    folds = summary["classifiers"]["hrnet"]
    assert len(folds) == 2
    held_out = sum(f["held_out"]["n"] for f in folds)
    dropped = summary["dropped_by_min_area"]["train"]
    assert held_out + dropped == 15  # every kept train image is held out exactly once
    assert {"sensitivity", "specificity", "per_source"} <= set(folds[0]["held_out"])
    report = (run / "report.md").read_text()
    assert "Table 6 (hrnet)" in report and "Table 7" in report and "dilation 8 + closing 2" in report
    assert "Heat-map faithfulness" in report
    faithfulness = json.loads((run / "faithfulness.json").read_text())
    scored = faithfulness["all"]["n"]
    assert scored + faithfulness["no_heat"] > 0
    assert faithfulness["all"]["in_lung_share"]["n"] == scored  # lung-only inputs: every scored map gets a share

    # Export: the UNet and the classifier chosen on val, served on the dilated lung-only image it was trained on.
    registry = Registry.open(weights)
    card = registry.default("cxr-classification")
    assert (card.input_kind, card.output, card.segmenter) == ("lung-only", "sigmoid", "hrnet-unet-lungs")
    assert card.classes == ["non-covid", "covid"] and card.metrics["test"]["n"] == summary["classifiers"]["hrnet"][0]["test"]["n"]
    record = next(r for r in read_records([synthetic_pack]) if r.split == "test")
    trained, _ = hrnet_unet.segmented_images([record], registry.load_torch(registry.card("hrnet-unet-lungs")),
                                             hrnet_unet.PROFILES["smoke"])
    assert np.abs(served_inputs(registry, card.name, record.image)[0] - trained[0].astype(np.float32)).max() < 2e-3
