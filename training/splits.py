"""Patient-wise splits: fixed train/val/test by hash, k-fold and hold-out for the recipes.

Every split here is by patient, because several images of one patient in both training and
evaluation make the scores measure memory of that patient rather than of the disease.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

SPLIT_NAMES = ("train", "val", "test")


def patient_split(patient_ids: Sequence[str], fractions=(0.8, 0.1, 0.1), salt: str = "") -> list[str]:
    """"train"/"val"/"test" per item from a hash of its patient id: stable across runs, machines and
    dataset growth (adding patients never moves existing ones)."""
    bounds = np.cumsum(fractions) / np.sum(fractions)
    return [SPLIT_NAMES[_bucket(_unit_hash(salt + patient), bounds)] for patient in patient_ids]


def _unit_hash(text: str) -> float:
    # sha256 rather than hash(): Python salts str hashes per process
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _bucket(value: float, bounds: np.ndarray) -> int:
    return min(int(np.searchsorted(bounds, value, side="right")), len(bounds) - 1)


def patient_kfold(patient_ids: Sequence[str], labels: Sequence, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train indices, held-out indices) pairs; each patient is held out in exactly one fold and
    class proportions are kept per fold where every class has at least k patients."""
    groups = np.asarray(patient_ids)
    n_patients = len(set(patient_ids))
    if n_patients < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} patients, got {n_patients}")
    patients_per_class = Counter(label for _, label in set(zip(patient_ids, labels)))
    if min(patients_per_class.values()) >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:  # a class too small to appear in every fold cannot be stratified
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), np.asarray(labels), groups))


def holdout_split(patient_ids: Sequence[str], labels: Sequence, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) holding out ``fraction`` of each class's patients."""
    patient_label = _majority_label_per_patient(patient_ids, labels)
    rng = np.random.default_rng(seed)
    held_out = set()
    for label in sorted(set(patient_label.values()), key=str):
        members = sorted(patient for patient, own in patient_label.items() if own == label)
        rng.shuffle(members)
        held_out.update(members[: round(len(members) * fraction)])
    is_held_out = np.array([patient in held_out for patient in patient_ids], dtype=bool)
    return np.flatnonzero(~is_held_out), np.flatnonzero(is_held_out)


def _majority_label_per_patient(patient_ids: Sequence[str], labels: Sequence) -> dict:
    # a patient's images can carry different findings; stratify on the most frequent one
    counts: dict[str, Counter] = {}
    for patient, label in zip(patient_ids, labels):
        counts.setdefault(patient, Counter())[label] += 1
    return {patient: count.most_common(1)[0][0] for patient, count in counts.items()}


def subsample_per_class(labels: Sequence, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices keeping at most ``limit`` random samples of each class (all when ``limit`` is None)."""
    labels = np.asarray(labels)
    if limit is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]))
