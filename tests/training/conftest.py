"""A tiny synthetic data pack in the shared pack's layout (phantoms with lung masks), for recipe tests."""

import csv

import numpy as np
import pytest
from PIL import Image

from core.classes import MANET_CLASSES
from core.phantoms import make_phantom

COLUMNS = ["image", "label", "finding", "source", "source_file", "patient_id", "split", "view", "width", "height",
           "orig_width", "orig_height", "lung_mask", "lung_mask_source", "infection_mask", "license"]


def write_pack(root, count=30):
    folder = root / "cxr"
    (folder / "images" / "synthetic").mkdir(parents=True)
    (folder / "masks" / "lung" / "synthetic").mkdir(parents=True)
    rows = []
    for index in range(count):
        label = MANET_CLASSES[index % 5]
        split = ("train", "train", "train", "val", "test")[index // 5 % 5] if index < 25 else "test"
        phantom = make_phantom(label, seed=index, size=96)
        name = f"synthetic/{label}_{index}"
        Image.fromarray((phantom.pixels * 255).astype(np.uint8)).save(folder / "images" / f"{name}.jpg")
        Image.fromarray(phantom.lung_mask.astype(np.uint8) * 255).save(folder / "masks" / "lung" / f"{name}.png")
        rows.append({
            "image": f"images/{name}.jpg", "label": label, "source": f"synthetic-{'ab'[index % 2]}", "patient_id": f"p{index}",
            "split": split, "orig_width": 96, "view": "PA", "lung_mask": f"masks/lung/{name}.png",
        })
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)



@pytest.fixture
def synthetic_pack(tmp_path, monkeypatch):
    """Path of a 30-image pack (6 per class, train/val/test); the cache goes to tmp_path."""
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    write_pack(tmp_path / "data")
    return tmp_path / "data"
