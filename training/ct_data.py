"""Reading the data pack's CT collections (``ct_infection``, ``ct_slices``) into records and uint8 caches.

Records carry resolved paths and the split every CT recipe uses. The pack's own ``split`` column is
kept wherever it is usable; where it is not, a deterministic split is assigned here, once, so every
recipe and report sees the same one (the rules are the ``*_SPLIT_NOTE`` constants below, which the
reports print as they are).

Pixels are decoded and resized once into uint8 arrays cached on disk (``training.data.stack_resized``);
recipes index those arrays per batch and never decode a file per epoch.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from training.data import stack_resized
from training.splits import patient_split

MASK_KINDS = ("binary", "multiclass", "none")  # 0/255 infection; 0 bg / 1 ground glass / 2 consolidation; no mask
MULTICLASS_LABELS = ("background", "ggo", "consolidation")

# ---------------------------------------------------------------- split rules (printed by the reports)
MEDSEG_SUBSETS = ("doctor-label", "multiclass-train")
MEDSEG_HOLDOUT = {"test": 10, "val": 5}  # of the 50 MedSeg slices; the other 35 train
MEDSEG_SPLIT_NOTE = (
    "COVID-SemiSeg (MedSeg) labelled slices: the pack marks all 50 `train` and has no multi-class test split. "
    "The `doctor-label` (binary) and `multiclass-train` (0/1/2) subsets are the same 50 slices (identical pixels, "
    "the binary mask is the union of the two classes), so one hold-out serves both: the 50 file names are "
    "ordered by SHA-256 of the name; the first 10 are `test`, the next 5 `val`, the other 35 `train`, in both "
    "subsets alike (a slice never trains one head and tests the other). The pack's ma2020 `test` split (100 "
    "slices) stays the main binary infection test set."
)
MA2020_SPLIT_NOTE = (
    "ma2020 slices (Ma et al., 20 volumes): the pack's split, which keeps runs of ~100 consecutive slices "
    "together. The 1,600 `unlabelled` COVID-SemiSeg slices come from the same 20 volumes (coronacases 001-010, "
    "radiopaedia): a model trained on them (Semi-Inf-Net pseudo labels) has seen the test volumes' anatomy, "
    "though never their masks."
)
UCSD_SPLITS = (0.70, 0.15, 0.15)
UCSD_SALT = "ucsd-covid-ct:"
UCSD_SPLIT_NOTE = (
    "UCSD COVID-CT: the pack has only `official-train-val` (the official test split is withheld); slices are "
    "assigned train/val/test 70/15/15 by SHA-256 of `ucsd-covid-ct:` + patient_id (training.splits.patient_split), "
    "so a patient never straddles two splits. COVID patient ids group slices by source publication."
)
SARSCOV2_SPLIT_NOTE = (
    "SARS-CoV-2 CT-scan dataset (Soares et al.): the pack's split is kept, but this set has no patient ids "
    "(each slice is its own 'patient'), so slices of one patient can fall in train and test: its test "
    "figures are optimistic."
)
CT_SLICE_SPLIT_NOTES = {"ucsd-covid-ct": UCSD_SPLIT_NOTE, "sarscov2-ct": SARSCOV2_SPLIT_NOTE}
CT_INFECTION_SPLIT_NOTES = {"medseg-covid-semiseg": MEDSEG_SPLIT_NOTE, "covid19-ct-seg-ma2020": MA2020_SPLIT_NOTE}


# ---------------------------------------------------------------- infection / lung masks
@dataclass(frozen=True)
class CtSegRecord:
    image: Path
    mask: Path | None  # infection mask; None when mask_kind is "none"
    lung_mask: Path | None  # 0/255 lungs (ma2020 only)
    mask_kind: str  # one of MASK_KINDS
    subset: str  # doctor-label, multiclass-train, unlabelled, ma2020-slices
    source: str
    split: str  # train / val / test / unlabelled


def read_ct_infection_records(root: Path) -> list[CtSegRecord]:
    """Every row of ``ct_infection/labels.csv``, paths resolved, with the MedSeg hold-out applied."""
    folder = Path(root) / "ct_infection"
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = [
        CtSegRecord(
            image=folder / row["image"],
            mask=folder / row["mask"] if row["mask"] else None,
            lung_mask=folder / row["lung_mask"] if row["lung_mask"] else None,
            mask_kind=_checked_kind(row["mask_kind"]),
            subset=row["subset"],
            source=row["source"],
            split=row["split"],
        )
        for row in rows
    ]
    return apply_medseg_holdout(records)


def _checked_kind(kind: str) -> str:
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask_kind {kind!r} in ct_infection/labels.csv (expected one of {MASK_KINDS})")
    return kind


def medseg_holdout_split(names: list[str]) -> dict[str, str]:
    """File name -> split: names ordered by SHA-256, then ``MEDSEG_HOLDOUT`` test, val, the rest train."""
    ordered = sorted(set(names), key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    n_test, n_val = MEDSEG_HOLDOUT["test"], MEDSEG_HOLDOUT["val"]
    return {name: "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for rank, name in enumerate(ordered)}


def apply_medseg_holdout(records: list[CtSegRecord]) -> list[CtSegRecord]:
    """The same split for a MedSeg slice in ``doctor-label`` and ``multiclass-train`` (see ``MEDSEG_SPLIT_NOTE``)."""
    medseg = [r.image.name for r in records if r.subset in MEDSEG_SUBSETS]
    split_of = medseg_holdout_split(medseg)
    return [replace(r, split=split_of[r.image.name]) if r.subset in MEDSEG_SUBSETS else r for r in records]


# ---------------------------------------------------------------- COVID / non-COVID slices
@dataclass(frozen=True)
class CtSliceRecord:
    image: Path
    label: str  # covid / noncovid
    source: str  # ucsd-covid-ct, sarscov2-ct
    patient_id: str
    split: str  # train / val / test


def read_ct_slice_records(root: Path) -> list[CtSliceRecord]:
    """``ct_slices/labels.csv`` with UCSD given a patient-wise train/val/test split (``UCSD_SPLIT_NOTE``)."""
    folder = Path(root) / "ct_slices"
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = [CtSliceRecord(folder / row["image"], row["label"], row["source"], row["patient_id"], row["split"])
               for row in rows]
    return assign_ucsd_splits(records)


def assign_ucsd_splits(records: list[CtSliceRecord]) -> list[CtSliceRecord]:
    """Records whose split is not train/val/test (UCSD's ``official-train-val``) get one by patient hash."""
    unsplit = [i for i, r in enumerate(records) if r.split not in ("train", "val", "test")]
    splits = patient_split([records[i].patient_id for i in unsplit], UCSD_SPLITS, salt=UCSD_SALT)
    records = list(records)
    for index, split in zip(unsplit, splits):
        records[index] = replace(records[index], split=split)
    return records


# ---------------------------------------------------------------- uint8 caches (decoded once)
def image_stack(records, size: int) -> np.ndarray:
    """(N, size, size) uint8 greyscale slices, 0-255 (per-image min-max comes later, as served)."""
    return stack_resized([r.image for r in records], size)


def infection_stack(records: list[CtSegRecord], size: int) -> np.ndarray:
    """(N, size, size) uint8 infection labels: 0/1 for binary masks, 0/1/2 for multi-class ones.

    One kind per stack: mixing binary and multi-class masks would give label 1 two meanings.
    """
    kinds = {r.mask_kind for r in records}
    if "none" in kinds or len(kinds) > 1:
        raise ValueError(f"infection_stack needs records of one mask kind, binary or multiclass (got {sorted(kinds)})")
    multiclass = kinds == {"multiclass"}
    return stack_resized([r.mask for r in records], size, is_mask=True, multiclass=multiclass)


def lung_stack(records: list[CtSegRecord], size: int) -> np.ndarray:
    """(N, size, size) uint8 lung masks 0/1 (records without a lung mask are refused)."""
    missing = sum(r.lung_mask is None for r in records)
    if missing:
        raise ValueError(f"{missing} of {len(records)} records have no lung mask (only ma2020 slices do)")
    return stack_resized([r.lung_mask for r in records], size, is_mask=True)


def by_split(records) -> dict[str, list]:
    """Records grouped by split, in file order."""
    out: dict[str, list] = {}
    for record in records:
        out.setdefault(record.split, []).append(record)
    return out
