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

from core.preprocess import resize_square
from core.progress import progress_bar

DATA_ENV = "CHEST_DATA"


class DataNotFoundError(FileNotFoundError):
    pass


def resolve_data_root(path: str | os.PathLike | None = None, collections: tuple[str, ...] = ("cxr",)) -> Path:
    """``--data`` flag, else ``$CHEST_DATA``, else ``../shared/data`` beside the repository.

    The first candidate holding ``<collection>/labels.csv`` for every one of ``collections`` wins: the
    X-ray recipes need ``cxr``; CT recipes pass e.g. ``("ct_infection",)`` so a CT-only folder is found.
    A folder of shards (``training.shards``) is verified and unpacked once, and its pack is the candidate.
    """
    candidates = [path, os.environ.get(DATA_ENV), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "shards.json").is_file():  # ``python -m training pack-shards`` output
            from training.shards import unpack_shards

            candidate = unpack_shards(candidate)
        if candidate and all((Path(candidate) / name / "labels.csv").is_file() for name in collections):
            return Path(candidate)
    needed = " and ".join(f"{name}/labels.csv" for name in collections)
    raise DataNotFoundError(f"no data pack found: pass --data PATH or set CHEST_DATA to a folder holding {needed}")


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


def save_cache(path: Path, arrays: np.ndarray | dict[str, np.ndarray]) -> None:
    """Write a decoded-data cache (``.npy`` for one array, ``.npz`` for a dict) by rank 0 only, atomically.

    Under torchrun every process decodes the same files; one writer and a rename keep two processes from
    interleaving one file, and a reader from ever seeing half of it.
    """
    from training.engine import is_main_process

    if not is_main_process():
        return
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    with open(partial, "wb") as handle:  # a file object: numpy adds no suffix of its own
        if isinstance(arrays, dict):
            np.savez(handle, **arrays)
        else:
            np.save(handle, arrays)
    partial.replace(path)


def load_label_map(path: Path) -> np.ndarray:
    """A label mask as stored (e.g. 0 background, 1 ground glass, 2 consolidation), uint8, not rescaled."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def stack_resized(paths: list[Path], size: int, is_mask: bool = False, multiclass: bool = False) -> np.ndarray:
    """(N, size, size) uint8: images 0-255, masks 0/1. Cached by file list and size.

    ``multiclass``: label masks (0/1/2...) resized by nearest neighbour, so the labels are kept as they
    are and no in-between label appears at a boundary.
    """
    is_mask = is_mask or multiclass
    # The key of binary masks and images is unchanged, so existing caches stay valid.
    key = hashlib.sha256(("|".join(map(str, paths)) + f"|{size}|{is_mask}" + ("|multiclass" if multiclass else "")).encode())
    kind = "labels" if multiclass else "mask" if is_mask else "image"
    cache = cache_dir() / f"{kind}-{size}-{key.hexdigest()[:20]}.npy"
    if cache.exists():
        return np.load(cache)
    out = np.zeros((len(paths), size, size), dtype=np.uint8)
    for index, path in enumerate(progress_bar(paths, desc=f"decoding {kind}s at {size}px", leave=False)):
        if multiclass:
            out[index] = resize_square(load_label_map(path).astype(np.float32), size, order=0).round()
            continue
        pixels = load_gray(path)
        if is_mask:
            out[index] = resize_square(pixels, size, order=0) > 0.5
        else:
            out[index] = np.clip(resize_square(pixels, size) * 255.0 + 0.5, 0, 255)
    save_cache(cache, out)
    return out
