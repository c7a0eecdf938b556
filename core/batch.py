"""Batch prediction over files and folders, through the same guards and pipelines as the app.

One entry, ``predict_rows(task, ...)``, dispatches on the task (``cxr`` or ``ct-slice``); each task
has its CSV columns (a contract: users script against them). Refused files get ``status=refused``
and the reason in ``message``. The image-kind gate runs on every file when the registry has one.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import ChestReviewError
from .guard import check_chest_xray, check_ct_slice
from .guard.image_kind import ImageKindGate, check_image_kind
from .io import load_image

TASKS = ("cxr", "ct-slice")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ""}
CT_SLICE_COLUMNS = [
    "file", "status", "predicted_label", "prob_covid", "prob_noncovid", "lung_area_fraction", "infection_fraction",
    "ggo_fraction", "consolidation_fraction", "model", "model_version", "seconds", "message",
]


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked recursively for image-like files, sorted for a stable order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def cxr_columns(classes: list[str]) -> list[str]:
    return ["file", "status", "predicted_label", *[f"prob_{c}" for c in classes], "lung_area_fraction",
            "model", "model_version", "seconds", "message"]


def predict_rows(task: str, pipeline, files: list[Path], gate: ImageKindGate | None = None,
                 masks_dir: Path | None = None, progress: bool = True) -> Iterator[dict]:
    """One CSV row per file for ``task``; ``masks_dir`` (CT slices) also receives lung and infection masks."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    card = pipeline.cls_card if task == "cxr" else pipeline.cards.get("classifier", pipeline.cards["infection"])
    written: set[str] = set()
    for path in tqdm(files, desc="chest X-rays" if task == "cxr" else "CT slices", unit="image", disable=not progress):
        started = time.perf_counter()
        row = {"file": str(path), "model": card.name, "model_version": card.version}
        try:
            study = load_image(path.read_bytes(), path.name)
            if task == "cxr":
                study = check_image_kind(check_chest_xray(study), "chest-xray", gate) if gate else check_chest_xray(study)
                row.update(_cxr_row(pipeline.analyse(study, explain=False)))
            else:
                study = check_image_kind(check_ct_slice(study), "chest-ct", gate) if gate else check_ct_slice(study)
                result = pipeline.analyse(study)
                row.update(_ct_slice_row(result))
                if masks_dir is not None:
                    row["message"] = " ".join(filter(None, [row["message"], _write_masks(result, path, masks_dir, written)]))
        except (ChestReviewError, OSError) as error:
            row.update(status="refused", message=str(error))
        row["seconds"] = round(time.perf_counter() - started, 4)
        yield row


def _cxr_row(result) -> dict:
    return {f"prob_{k}": round(v, 6) for k, v in result.probabilities.items()} | {
        "status": "ok", "predicted_label": result.predicted_label,
        "lung_area_fraction": round(result.lung.area_fraction, 4), "message": " ".join(result.warnings),
    }


def _ct_slice_row(result) -> dict:
    burden = result.burden

    def rounded(value):
        return "" if value is None else round(value, 4)

    return {
        "status": "ok", "predicted_label": result.predicted_label or "",
        "prob_covid": rounded(result.probabilities.get("covid")), "prob_noncovid": rounded(result.probabilities.get("non-covid")),
        "lung_area_fraction": rounded(burden.lung_area_fraction), "infection_fraction": rounded(burden.infection_fraction),
        "ggo_fraction": rounded(burden.ggo_fraction), "consolidation_fraction": rounded(burden.consolidation_fraction),
        "message": " ".join(result.warnings),
    }


def _write_masks(result, path: Path, masks_dir: Path, written: set[str]) -> str:
    """``<stem>_lungs.png`` and ``<stem>_infection.png`` (0 / 255) at the input's size; a note when a stem repeats."""
    if path.stem in written:
        return f"Masks not written: another input already wrote {path.stem}_lungs.png and {path.stem}_infection.png."
    masks_dir.mkdir(parents=True, exist_ok=True)
    for suffix, mask in (("lungs", result.lung_mask), ("infection", result.infection_labels > 0)):
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(masks_dir / f"{path.stem}_{suffix}.png")
    written.add(path.stem)
    return ""


def write_csv(rows: Iterable[dict], out: Path, columns: list[str]) -> int:
    count = 0
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count
