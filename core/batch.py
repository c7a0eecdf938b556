"""Batch prediction over files and folders, through the same guards and pipelines as the app.

One entry, ``predict_rows(task, ...)``, dispatches on the task (``cxr``, ``ct-slice`` or ``ct-volume``);
each task has its CSV columns (a contract: users script against them). Refused files get
``status=refused`` and the reason in ``message``. The image-kind gate runs on every image file when
the registry has one (a CT volume has its own guard, ``core.guard.ct_volume``, and the lung coverage
check after segmentation). For ``ct-volume`` one input is one case: a NIfTI file, or a folder holding
one DICOM series (``volume_cases``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from core.progress import progress_bar

from .errors import ChestReviewError
from .guard import check_chest_xray, check_ct_slice
from .guard.image_kind import ImageKindGate, check_image_kind
from .io import load_image

TASKS = ("cxr", "ct-slice", "ct-volume")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ""}
CT_SLICE_COLUMNS = [
    "file", "status", "predicted_label", "prob_covid", "prob_noncovid", "lung_area_fraction", "infection_fraction",
    "ggo_fraction", "consolidation_fraction", "model", "model_version", "seconds", "message",
]
CT_VOLUME_COLUMNS = [
    "file", "status", "predicted_label", "prob_covid", "prob_cap", "lung_volume_ml", "infection_volume_ml",
    "infection_ratio", "size_group", "model", "model_version", "seconds", "message",
]
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked recursively for image-like files, sorted for a stable order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def volume_cases(paths: Iterable[str | Path]) -> list[Path]:
    """One case per path: a file (NIfTI, zip) or a folder holding one DICOM series; a folder holding only
    NIfTI files gives one case per NIfTI file (sorted)."""
    cases: list[Path] = []
    for path in map(Path, paths):
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else []
        if files and all(p.name.lower().endswith(NIFTI_SUFFIXES) for p in files):
            cases += files
        else:
            cases.append(path)
    return cases


def case_name(path: Path) -> str:
    """``<name>`` of a case's mask files: the file name without ``.nii`` / ``.nii.gz``, or the folder's name."""
    lowered = path.name.lower()
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name if path.is_dir() else path.stem


def cxr_columns(classes: list[str]) -> list[str]:
    return ["file", "status", "predicted_label", *[f"prob_{c}" for c in classes], "lung_area_fraction",
            "model", "model_version", "seconds", "message"]


def predict_rows(task: str, pipeline, files: list[Path], gate: ImageKindGate | None = None,
                 masks_dir: Path | None = None, progress: bool = True) -> Iterator[dict]:
    """One CSV row per file for ``task``; ``masks_dir`` (CT slices and volumes) also receives lung and infection masks.

    X-ray and CT slice rows also carry ``logits`` (the classifier's raw output as a list, before the card's
    temperature; ``python -m training calibrate`` fits on them), a key outside the CSV columns."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    if task == "ct-volume":
        yield from _volume_rows(pipeline, files, masks_dir, progress)
        return
    written: set[str] = set()
    for path in progress_bar(files, desc="chest X-rays" if task == "cxr" else "CT slices", unit="image", disable=not progress):
        yield image_row(task, pipeline, path, gate, masks_dir, written)


def image_row(task: str, pipeline, path: Path, gate: ImageKindGate | None = None, masks_dir: Path | None = None,
              written: set[str] | None = None) -> dict:
    """The row ``predict_rows`` gives one X-ray or CT slice file (``task`` ``cxr`` or ``ct-slice``); a file the guards
    refuse gives ``status=refused``. ``written``: mask stems already written by this run (CT slices with ``masks_dir``)."""
    card = pipeline.cls_card if task == "cxr" else pipeline.cards.get("classifier", pipeline.cards["infection"])

    def analyse(row: dict) -> None:
        study = load_image(path.read_bytes(), path.name)
        if task == "cxr":
            study = check_image_kind(check_chest_xray(study), "chest-xray", gate) if gate else check_chest_xray(study)
            row.update(_cxr_row(pipeline.analyse(study, explain=False)))
            return
        study = check_image_kind(check_ct_slice(study), "chest-ct", gate) if gate else check_ct_slice(study)
        result = pipeline.analyse(study)
        row.update(_ct_slice_row(result))
        if masks_dir is not None:
            row["message"] = " ".join(filter(None, [row["message"], _write_masks(
                result, path, masks_dir, set() if written is None else written)]))

    return _timed_row({"file": str(path), "model": card.name, "model_version": card.version}, analyse)


def _timed_row(row: dict, analyse, memory_message: str | None = None) -> dict:
    """``analyse(row)`` fills in one file's row; a refused input (a typed error, an unreadable file; too little memory
    when ``memory_message`` says what to tell) gives ``status=refused`` with the reason instead; ``seconds`` either way."""
    started = time.perf_counter()
    try:
        analyse(row)
    except (ChestReviewError, OSError) as error:
        row.update(status="refused", message=str(error))
    except MemoryError:
        if memory_message is None:
            raise
        row.update(status="refused", message=memory_message)
    row["seconds"] = round(time.perf_counter() - started, 4)
    return row


def _cxr_row(result) -> dict:
    return {f"prob_{k}": round(v, 6) for k, v in result.probabilities.items()} | {
        "status": "ok", "predicted_label": result.predicted_label,
        "lung_area_fraction": round(result.lung.area_fraction, 4), "message": " ".join(result.warnings),
        "logits": None if result.logits is None else [float(v) for v in result.logits],
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
        "message": " ".join(result.warnings), "logits": None if result.logits is None else [float(v) for v in result.logits],
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


def _volume_rows(pipeline, cases: list[Path], masks_dir: Path | None, progress: bool) -> Iterator[dict]:
    written: set[str] = set()
    for path in progress_bar(cases, desc="CT volumes", unit="volume", disable=not progress):
        yield volume_row(pipeline, path, masks_dir, written)


def volume_row(pipeline, path: Path, masks_dir: Path | None = None, written: set[str] | None = None) -> dict:
    """The row ``predict_rows`` gives one CT volume case (a NIfTI file or a folder holding one DICOM series)."""
    from .guard.ct_volume import check_ct_volume
    from .io import load_volume_path

    model, version = volume_model_id(pipeline.cards)

    def analyse(row: dict) -> None:
        result = pipeline.analyse(check_ct_volume(load_volume_path(path)))
        row.update(_ct_volume_row(result))
        if masks_dir is not None:
            row["message"] = " ".join(filter(None, [row["message"], _write_volume_masks(
                result, path, masks_dir, set() if written is None else written)]))

    return _timed_row({"file": str(path), "model": model, "model_version": version}, analyse,
                      memory_message="The volume is too large for this computer's memory.")


def volume_model_id(cards: dict) -> tuple[str, str]:
    """(model, model_version) of a CT volume row: the 3D classifiers ("uniform+size-balanced" names joined by "+"),
    or the infection model when none is installed (segmentation and measurement only)."""
    from .pipelines.ct_volume import SAMPLINGS

    chosen = [cards[s] for s in SAMPLINGS if s in cards] or [cards["infection"]]
    versions = list(dict.fromkeys(card.version for card in chosen))
    return "+".join(card.name for card in chosen), "+".join(versions)


def _ct_volume_row(result) -> dict:
    prob_covid, prob_cap = result.probabilities.get("covid"), result.probabilities.get("cap")
    return {
        "status": "ok", "predicted_label": result.predicted_label or "",
        "prob_covid": "" if prob_covid is None else round(prob_covid, 4),
        "prob_cap": "" if prob_cap is None else round(prob_cap, 4),
        "lung_volume_ml": round(result.lung_volume_ml["total"], 1),
        "infection_volume_ml": round(result.infection_volume_ml["total"], 2),
        "infection_ratio": round(result.infection_ratio, 6), "size_group": result.ratio_band,
        "message": " ".join(result.warnings),
    }


def _write_volume_masks(result, path: Path, masks_dir: Path, written: set[str]) -> str:
    """``<name>_lungs.nii.gz`` and ``<name>_infection.nii.gz`` (uint8 0/1) in the input's voxel grid and affine."""
    from .io.nifti import write_source_nifti

    name = case_name(path)
    if name in written:
        return f"Masks not written: another input already wrote {name}_lungs.nii.gz and {name}_infection.nii.gz."
    masks_dir.mkdir(parents=True, exist_ok=True)
    for suffix, mask in (("lungs", result.lung_mask), ("infection", result.infection_labels > 0)):
        write_source_nifti(mask, result.volume, masks_dir / f"{name}_{suffix}.nii.gz")
    written.add(name)
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
