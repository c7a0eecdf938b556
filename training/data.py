"""Reading the shared data pack (``cxr/labels.csv``) into in-memory arrays for training.

The pack's ``split`` column is patient-wise; it is used as is so results stay comparable.
Decoded, resized arrays are cached on disk (``$CHEST_CACHE`` or ``~/.cache/chest-review``) because
decoding thousands of JPEGs dominates short CPU runs.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.preprocess import resize_square

DATA_ENV = "CHEST_DATA"


class DataNotFoundError(FileNotFoundError):
    pass


def resolve_data_root(path: str | os.PathLike | None = None) -> Path:
    """``--data`` flag, else ``$CHEST_DATA``, else ``../shared/data`` beside the repository."""
    candidates = [path, os.environ.get(DATA_ENV), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "cxr" / "labels.csv").is_file():
            return Path(candidate)
    raise DataNotFoundError(
        "no data pack found: pass --data PATH or set CHEST_DATA to a folder holding cxr/labels.csv"
    )


@dataclass(frozen=True)
class CxrRecord:
    image: Path
    label: str
    source: str
    patient_id: str
    split: str
    lung_mask: Path | None
    orig_width: int


def read_cxr_records(root: Path) -> list[CxrRecord]:
    folder = Path(root) / "cxr"
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        CxrRecord(
            image=folder / row["image"],
            label=row["label"],
            source=row["source"],
            patient_id=row["patient_id"],
            split=row["split"],
            lung_mask=folder / row["lung_mask"] if row["lung_mask"] else None,
            orig_width=int(row["orig_width"] or 0),
        )
        for row in rows
    ]


def load_gray(path: Path) -> np.ndarray:
    """8-bit greyscale file -> float32 in [0, 1], the same range ``core.io`` hands to the pipeline."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def cache_dir() -> Path:
    folder = Path(os.environ.get("CHEST_CACHE", Path.home() / ".cache" / "chest-review"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stack_resized(paths: list[Path], size: int, is_mask: bool = False) -> np.ndarray:
    """(N, size, size) uint8: images 0-255, masks 0/1. Cached by file list and size."""
    key = hashlib.sha256(("|".join(map(str, paths)) + f"|{size}|{is_mask}").encode()).hexdigest()[:20]
    cache = cache_dir() / f"{'mask' if is_mask else 'image'}-{size}-{key}.npy"
    if cache.exists():
        return np.load(cache)
    out = np.zeros((len(paths), size, size), dtype=np.uint8)
    for index, path in enumerate(tqdm(paths, desc=f"decoding {'masks' if is_mask else 'images'} at {size}px", leave=False)):
        pixels = load_gray(path)
        if is_mask:
            out[index] = resize_square(pixels, size, order=0) > 0.5
        else:
            out[index] = np.clip(resize_square(pixels, size) * 255.0 + 0.5, 0, 255)
    np.save(cache, out)
    return out
