"""The MANet recipe end to end on a tiny synthetic data pack in the shared pack's layout, then export."""

import csv

import numpy as np
from PIL import Image

from core.classes import MANET_CLASSES
from core.phantoms import make_phantom
from core.pipelines.cxr import CxrPipeline
from core.registry import Registry
from training.__main__ import main as training_main

COLUMNS = ["image", "label", "finding", "source", "source_file", "patient_id", "split", "view", "width", "height",
           "orig_width", "orig_height", "lung_mask", "lung_mask_source", "infection_mask", "license"]


def write_pack(root):
    folder = root / "cxr"
    (folder / "images" / "synthetic").mkdir(parents=True)
    (folder / "masks" / "lung" / "synthetic").mkdir(parents=True)
    rows = []
    for index in range(30):
        label = MANET_CLASSES[index % 5]
        split = ("train", "train", "train", "val", "test")[index // 5 % 5] if index < 25 else "test"
        phantom = make_phantom(label, seed=index, size=96)
        name = f"synthetic/{label}_{index}"
        Image.fromarray((phantom.pixels * 255).astype(np.uint8)).save(folder / "images" / f"{name}.jpg")
        Image.fromarray(phantom.lung_mask.astype(np.uint8) * 255).save(folder / "masks" / "lung" / f"{name}.png")
        rows.append({
            "image": f"images/{name}.jpg", "label": label, "source": "synthetic", "patient_id": f"p{index}",
            "split": split, "orig_width": 96, "lung_mask": f"masks/lung/{name}.png",
        })
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def test_recipe_trains_reports_and_exports_a_servable_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    write_pack(tmp_path / "data")
    run, weights = tmp_path / "run", tmp_path / "weights"
    training_main(["manet", "--profile", "smoke", "--data", str(tmp_path / "data"), "--out", str(run),
                   "--export", str(weights)])
    for name in ("config.json", "segmenter_test.json", "classifier_test.json", "segmenter/log.csv", "classifier/log.csv"):
        assert (run / name).is_file(), name
    registry = Registry.open(weights)
    classifier = registry.default("cxr-classification")
    assert classifier.classes == list(MANET_CLASSES)
    assert classifier.metrics["test"]["n"] == 10 and "confusion_matrix" in classifier.metrics["test"]
    assert registry.default("lung-segmentation").metrics["test"]["by_class"]["n"] == 10
    # Re-running resumes from the checkpoints (nothing left to train) and re-exports the same weights.
    training_main(["export", str(run), "--weights", str(weights)])
    assert Registry.open(weights).default("cxr-classification").weights_sha256 == classifier.weights_sha256
    result = CxrPipeline(registry).analyse(make_phantom("covid", seed=99, size=96).to_study(), explain=True)
    assert set(result.probabilities) == set(MANET_CLASSES)
