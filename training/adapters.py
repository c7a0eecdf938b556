"""Readers for the public chest X-ray datasets in the folder layouts they are published in.

The recipes train on ``CxrRecord`` lists; besides the shared pack, users hold the original NLM
tuberculosis sets, Cohen's COVID-19 collection and Kermany's paediatric pneumonia set as downloaded,
so each layout gets a reader and ``read_records`` takes any mix of them. Sources without a
patient-wise split get one from ``patient_split``, so a patient never straddles training and evaluation.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import CxrRecord, DataNotFoundError, cache_dir, read_cxr_records
from training.splits import patient_split

NLM_SOURCES = {"MCUCXR": "nlm-montgomery", "CHNCXR": "nlm-shenzhen"}
KERMANY_SOURCES = {"train": "kermany-train", "val": "kermany-train", "test": "kermany-test"}
KERMANY_TRAIN_FRACTIONS = (0.9, 0.1, 0.0)  # Kermany's own test folder is the test split
# First match wins: COVID-19 sits under Pneumonia/Viral, and the plain organism names of older
# metadata.csv versions ("Streptococcus", "SARS") must land in the same class as the hierarchy.
COHEN_FINDING_KEYWORDS = (
    ("covid", ("covid", "sars-cov-2")),
    ("tb", ("tuberculosis", "mycobacterium")),
    ("normal", ("no finding",)),
    ("fungal", ("fungal", "pneumocystis", "aspergillosis", "candida", "histoplasmosis", "cryptococcus")),
    ("bacterial", ("bacterial", "streptococcus", "staphylococcus", "klebsiella", "e.coli", "legionella",
                   "mycoplasma", "chlamydophila", "nocardia")),
    ("viral", ("viral", "sars", "mers", "influenza", "varicella", "herpes")),
)
LAYOUT_HINTS = {
    "shards": "shards.json (python -m training pack-shards)",
    "pack": "cxr/labels.csv (shared data pack)",
    "nlm": "CXR_png/ (NLM Montgomery or Shenzhen)",
    "cohen": "metadata.csv + images/ (Cohen covid-chestxray-dataset)",
    "kermany": "[chest_xray/]{train,val,test}/{NORMAL,PNEUMONIA}/ (Kermany)",
}


def read_pack(root: str | os.PathLike) -> list[CxrRecord]:
    return read_cxr_records(Path(root))


def read_nlm_tb(root: str | os.PathLike, source: str | None = None) -> list[CxrRecord]:
    """``CXR_png/*_0.png`` normal, ``*_1.png`` TB; masks from ``ManualMask/{left,right}Mask`` or ``mask/``."""
    root = Path(root)
    records = []
    for image in sorted((root / "CXR_png").glob("*.png")):
        record_source = source or NLM_SOURCES.get(image.name[:6], "nlm")
        records.append(CxrRecord(
            image=image, label="tb" if image.stem.endswith("_1") else "normal", source=record_source,
            patient_id=image.stem.rsplit("_", 1)[0], split="",
            lung_mask=_nlm_lung_mask(root, image, record_source), orig_width=_image_width(image),
        ))
    return _assign_missing_splits(records)


def _nlm_lung_mask(root: Path, image: Path, source: str) -> Path | None:
    left, right = (root / "ManualMask" / side / image.name for side in ("leftMask", "rightMask"))
    if left.is_file() and right.is_file():
        return _merged_mask(left, right, cache_dir() / "merged-masks" / source / image.name)
    single = root / "mask" / f"{image.stem}_mask.png"
    return single if single.is_file() else None


def _merged_mask(left: Path, right: Path, target: Path) -> Path:
    """Both lungs in one 0/255 PNG, as the pack's masks are; rebuilt only when an input is newer."""
    if target.is_file() and target.stat().st_mtime > max(left.stat().st_mtime, right.stat().st_mtime):
        return target
    with Image.open(left) as left_mask, Image.open(right) as right_mask:
        union = (np.asarray(left_mask.convert("L")) > 0) | (np.asarray(right_mask.convert("L")) > 0)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")  # an interrupted write must never look cached
    Image.fromarray(union.astype(np.uint8) * 255).save(partial, format="PNG")
    partial.replace(target)
    return target


def read_cohen(root: str | os.PathLike) -> list[CxrRecord]:
    """Frontal X-rays of ``metadata.csv``; rows whose image is missing are skipped with a warning."""
    root = Path(root)
    with open(root / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if _is_frontal_xray(row)]
    records, missing = [], 0
    for row in rows:
        image = root / (row.get("folder") or "images") / row["filename"]
        if not image.is_file():
            missing += 1
            continue
        records.append(CxrRecord(
            image=image, label=cohen_label(row["finding"]), source="cohen",
            patient_id=f"cohen-{row['patientid']}", split="", lung_mask=None, orig_width=_image_width(image),
        ))
    if missing:
        warnings.warn(f"{root}: skipped {missing} of {len(rows)} frontal X-ray rows whose image file is missing", stacklevel=2)
    return _assign_missing_splits(records)


def _is_frontal_xray(row: dict) -> bool:
    return row["modality"].strip().lower() == "x-ray" and row["view"].strip().upper().startswith(("PA", "AP"))


def cohen_label(finding: str) -> str:
    text = finding.strip().lower()
    for label, keywords in COHEN_FINDING_KEYWORDS:
        if any(keyword in text for keyword in keywords):
            return label
    # bare "Pneumonia" is community-acquired of unknown cause; "Pneumonia/Lipoid", ARDS, ... are other
    return "pneumonia" if text == "pneumonia" else "other"


def read_kermany(root: str | os.PathLike) -> list[CxrRecord]:
    """``{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; bacterial or viral from the file name."""
    folder = _kermany_folder(Path(root))
    if folder is None:
        raise DataNotFoundError(f"{root}: no Kermany layout, expected {LAYOUT_HINTS['kermany']}")
    records = [
        _kermany_record(image, source, "test" if part == "test" else "")
        for part, source in KERMANY_SOURCES.items()
        for image in sorted((folder / part).glob("*/*"))
        if image.suffix.lower() in (".jpeg", ".jpg")
    ]
    return _assign_missing_splits(records, KERMANY_TRAIN_FRACTIONS)


def _kermany_folder(root: Path) -> Path | None:
    for candidate in (root / "chest_xray", root):
        if any((candidate / part / "NORMAL").is_dir() for part in KERMANY_SOURCES):
            return candidate
    return None


def _kermany_record(image: Path, source: str, split: str) -> CxrRecord:
    if image.parent.name.upper() == "NORMAL":  # IM-0115-0001, NORMAL2-IM-1427-0001: last part counts images
        label, patient = "normal", image.stem.rsplit("-", 1)[0]
    else:  # person1_bacteria_1, person1_virus_6
        label = "bacterial" if "_bacteria" in image.stem else "viral" if "_virus" in image.stem else "pneumonia"
        patient = image.stem.split("_")[0]
    # no folder in the id: should train and test reuse a number, grouping them can only prevent leakage
    return CxrRecord(image=image, label=label, source=source, patient_id=f"kermany-{patient}", split=split,
                     lung_mask=None, orig_width=_image_width(image))


def _image_width(path: Path) -> int:
    with Image.open(path) as image:  # opening decodes the header only
        return image.width


def _assign_missing_splits(records: list[CxrRecord], fractions=(0.8, 0.1, 0.1)) -> list[CxrRecord]:
    splits = iter(patient_split([record.patient_id for record in records if not record.split], fractions))
    return [record if record.split else replace(record, split=next(splits)) for record in records]


def read_shards(root: str | os.PathLike) -> list[CxrRecord]:
    """The pack held by ``python -m training pack-shards`` output, verified and unpacked once (``training.shards``)."""
    from training.shards import unpack_shards

    return read_pack(unpack_shards(root))


READERS = {"shards": read_shards, "pack": read_pack, "nlm": read_nlm_tb, "cohen": read_cohen, "kermany": read_kermany}


def detect_layout(path: str | os.PathLike) -> str:
    root = Path(path)
    matches = {
        "shards": lambda: (root / "shards.json").is_file(),
        "pack": lambda: (root / "cxr" / "labels.csv").is_file(),
        "nlm": lambda: (root / "CXR_png").is_dir(),
        "cohen": lambda: (root / "metadata.csv").is_file() and (root / "images").is_dir(),
        "kermany": lambda: _kermany_folder(root) is not None,
    }
    for layout, match in matches.items():
        if match():
            return layout
    raise DataNotFoundError(f"{root}: no known dataset layout; looked for " + "; ".join(LAYOUT_HINTS.values()))


def read_records(paths: list[str | os.PathLike]) -> list[CxrRecord]:
    """All records of several dataset roots, each in whichever layout it has."""
    return [record for path in paths for record in READERS[detect_layout(path)](Path(path))]
