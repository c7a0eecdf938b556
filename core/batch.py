"""Batch prediction over files and folders, through the same pipeline as the app."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from .errors import ChestReviewError
from .guard import check_chest_xray
from .io import load_image
from .pipelines.cxr import CxrPipeline

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ""}


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked recursively for image-like files, sorted for a stable order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def predict_rows(pipeline: CxrPipeline, files: list[Path], progress: bool = True) -> Iterator[dict]:
    for path in tqdm(files, desc="chest X-rays", unit="image", disable=not progress):
        started = time.perf_counter()
        row = {"file": str(path), "model": pipeline.cls_card.name, "model_version": pipeline.cls_card.version}
        try:
            study = check_chest_xray(load_image(path.read_bytes(), path.name))
            result = pipeline.analyse(study, explain=False)
        except (ChestReviewError, OSError) as error:
            row.update(status="refused", message=str(error))
        else:
            row.update({f"prob_{k}": round(v, 6) for k, v in result.probabilities.items()})
            row.update(
                status="ok", predicted_label=result.predicted_label,
                lung_area_fraction=round(result.lung.area_fraction, 4), message=" ".join(result.warnings),
            )
        row["seconds"] = round(time.perf_counter() - started, 4)
        yield row


def write_csv(rows: Iterable[dict], out: Path, classes: list[str]) -> int:
    columns = ["file", "status", "predicted_label", *[f"prob_{c}" for c in classes], "lung_area_fraction",
               "model", "model_version", "seconds", "message"]
    count = 0
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count
