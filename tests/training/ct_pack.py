"""A tiny generated CT pack in the shared pack's layout (``ct_infection``, ``ct_slices``), for CT tests.

Slices are drawn shapes (a bright body ellipse, two dark lungs, bright blobs as infection), not
patient images. The MedSeg part mirrors the real pack: ``doctor-label`` and ``multiclass-train`` are
the same slices, binary 0/255 and 0/1/2 masks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

INFECTION_COLUMNS = ["image", "mask", "lung_mask", "mask_kind", "subset", "source", "split", "width", "height"]
SLICE_COLUMNS = ["image", "label", "source", "source_file", "patient_id", "split", "width", "height"]


def synthetic_ct_slice(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 slice, uint8 lung mask 0/1, uint8 infection labels 0/1/2): body, two lungs, two lesions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    body = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.35) ** 2 < 1
    lungs = np.zeros((size, size), bool)
    for cx in (0.3, 0.7):
        lungs |= ((xx - cx) / 0.15) ** 2 + ((yy - 0.48) / 0.22) ** 2 < 1
    labels = np.zeros((size, size), np.uint8)
    for label in (1, 2):
        cx, cy = rng.uniform(0.22, 0.78), rng.uniform(0.35, 0.6)
        labels[(((xx - cx) ** 2 + (yy - cy) ** 2) < rng.uniform(0.003, 0.008)) & lungs] = label
    pixels = np.where(body, 150, 5) + rng.normal(0, 6, (size, size))
    pixels = np.where(lungs, 30, pixels)
    pixels = np.where(labels == 1, 90, np.where(labels == 2, 170, pixels))
    return np.clip(pixels, 0, 255).astype(np.uint8), lungs.astype(np.uint8), labels


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_ct_pack(root: Path, medseg: int = 12, ma2020: int = 12, unlabelled: int = 4, slices: int = 24) -> Path:
    """Write ``root/ct_infection`` and ``root/ct_slices``; returns ``root``."""
    root = Path(root)
    rows = []
    for index in range(medseg):
        image, _, labels = synthetic_ct_slice(index)
        _save(root / "ct_infection" / f"infnet/doctor-label/images/{index}.jpg", image)
        _save(root / "ct_infection" / f"infnet/multiclass-train/images/{index}.jpg", image)
        _save(root / "ct_infection" / f"infnet/doctor-label/masks/{index}.png", (labels > 0).astype(np.uint8) * 255)
        _save(root / "ct_infection" / f"infnet/multiclass-train/masks/{index}.png", labels)
        for subset, kind in (("doctor-label", "binary"), ("multiclass-train", "multiclass")):
            rows.append({"image": f"infnet/{subset}/images/{index}.jpg", "mask": f"infnet/{subset}/masks/{index}.png",
                         "mask_kind": kind, "subset": subset, "source": "medseg-covid-semiseg", "split": "train"})
    for index in range(unlabelled):
        image, _, _ = synthetic_ct_slice(100 + index)
        _save(root / "ct_infection" / f"infnet/unlabelled/images/u{index}.jpg", image)
        rows.append({"image": f"infnet/unlabelled/images/u{index}.jpg", "mask_kind": "none", "subset": "unlabelled",
                     "source": "medseg-covid-semiseg", "split": "unlabelled"})
    for index in range(ma2020):
        image, lungs, labels = synthetic_ct_slice(200 + index)
        name = f"{index:04d}"
        _save(root / "ct_infection" / f"ma2020/images/{name}.jpg", image)
        _save(root / "ct_infection" / f"ma2020/infection/{name}.png", (labels > 0).astype(np.uint8) * 255)
        _save(root / "ct_infection" / f"ma2020/lungs/{name}.png", lungs * 255)
        rows.append({"image": f"ma2020/images/{name}.jpg", "mask": f"ma2020/infection/{name}.png",
                     "lung_mask": f"ma2020/lungs/{name}.png", "mask_kind": "binary", "subset": "ma2020-slices",
                     "source": "covid19-ct-seg-ma2020", "split": ("train", "train", "val", "test")[index % 4]})
    _write_csv(root / "ct_infection" / "labels.csv", INFECTION_COLUMNS, rows)

    rows = []
    for index in range(slices):
        image, _, _ = synthetic_ct_slice(300 + index)
        label = ("covid", "noncovid")[index % 2]
        if index % 3:
            source, patient, split = "ucsd-covid-ct", f"ucsd-p{index // 4}", "official-train-val"
        else:
            source, patient, split = "sarscov2-ct", f"sarscov2-{index}", ("train", "val", "test")[index // 3 % 3]
        name = f"images/{source}/{source}__{label}__{index}.jpg"
        _save(root / "ct_slices" / name, image)
        rows.append({"image": name, "label": label, "source": source, "source_file": f"{index}.png",
                     "patient_id": patient, "split": split, "width": 64, "height": 64})
    _write_csv(root / "ct_slices" / "labels.csv", SLICE_COLUMNS, rows)
    return root


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
