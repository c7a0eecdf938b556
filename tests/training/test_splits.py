import warnings
from collections import Counter

import numpy as np
import pytest

from training.data import CxrRecord
from training.splits import holdout_split, patient_kfold, patient_split
from training.tasks import (
    BINARY_COVID, CXNET_BINARY, CXNET_CAP_VS_COVID, CXNET_PNEUMONIA, CXNET_THREE, MANET, PACK_LABELS, TASKS, select,
)


def cohort(n_patients=60, images_per_patient=3):
    """Patients with several images each; one label per patient, classes 3:2:1."""
    patients = [f"p{index}" for index in range(n_patients) for _ in range(images_per_patient)]
    labels = [("a", "a", "a", "b", "b", "c")[int(patient[1:]) % 6] for patient in patients]
    return patients, labels


def test_patient_split_is_deterministic_patient_wise_and_near_fractions():
    patients = [f"patient-{index // 2}" for index in range(4000)]
    splits = patient_split(patients)
    assert splits == patient_split(list(patients))
    assert all(splits[index] == splits[index + 1] for index in range(0, 4000, 2))
    shares = Counter(splits)
    assert abs(shares["train"] / 4000 - 0.8) < 0.04 and abs(shares["test"] / 4000 - 0.1) < 0.03
    assert patient_split(patients, salt="other") != splits
    assert "test" not in patient_split(patients, fractions=(0.9, 0.1, 0.0))


def test_kfold_holds_each_patient_out_once_and_keeps_class_balance():
    patients, labels = cohort()
    folds = patient_kfold(patients, labels, k=5, seed=1)
    assert len(folds) == 5
    held_out = np.concatenate([held for _, held in folds])
    assert sorted(held_out.tolist()) == list(range(len(patients)))
    owner = {}
    for fold, (train, held) in enumerate(folds):
        assert not {patients[i] for i in train} & {patients[i] for i in held}
        for index in held:
            assert owner.setdefault(patients[index], fold) == fold
        share_a = np.mean([labels[i] == "a" for i in held])
        assert abs(share_a - 0.5) < 0.15
        assert {labels[i] for i in held} == {"a", "b", "c"}


def test_kfold_falls_back_to_groups_for_rare_classes_and_rejects_too_few_patients():
    patients, labels = cohort(n_patients=12, images_per_patient=1)
    labels[0] = "rare"
    with warnings.catch_warnings():  # stratifying would warn about the class smaller than k
        warnings.simplefilter("error")
        folds = patient_kfold(patients, labels, k=4)
    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(12))
    with pytest.raises(ValueError, match="at least 5 patients"):
        patient_kfold(["x", "x", "y", "z"], ["a", "a", "b", "b"], k=5)


def test_holdout_split_is_patient_wise_and_stratified():
    patients, labels = cohort(n_patients=100)
    train, held = holdout_split(patients, labels, fraction=0.2, seed=3)
    assert len(train) + len(held) == len(patients)
    assert not {patients[i] for i in train} & {patients[i] for i in held}
    held_patients = Counter(labels[i] for i in held)
    assert {label: count // 3 for label, count in held_patients.items()} == {"a": 10, "b": 7, "c": 3}
    assert np.array_equal(held, holdout_split(patients, labels, fraction=0.2, seed=3)[1])
    assert not np.array_equal(held, holdout_split(patients, labels, fraction=0.2, seed=4)[1])


def records_with(labels):
    return [CxrRecord(f"{label}.png", label, "test", f"p{index}", "train", None, 100) for index, label in enumerate(labels)]


def test_tasks_map_and_drop_labels():
    records = records_with(PACK_LABELS)
    kept, targets = select(records, CXNET_THREE)
    assert [(r.label, CXNET_THREE.classes[t]) for r, t in zip(kept, targets)] == [
        ("normal", "normal"), ("covid", "covid"), ("bacterial", "pneumonia"), ("viral", "pneumonia"), ("pneumonia", "pneumonia"),
    ]
    assert [r.label for r in select(records, MANET)[0]] == ["normal", "covid", "tb", "bacterial", "viral"]
    assert select(records, MANET)[1].tolist() == [0, 1, 2, 3, 4]
    assert select(records, BINARY_COVID)[1].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert [r.label for r in select(records, CXNET_BINARY)[0]] == ["normal", "covid"]
    kept, targets = select(records, CXNET_PNEUMONIA)
    assert dict(zip((r.label for r in kept), targets.tolist())) == {"normal": 0, "covid": 1, "bacterial": 1, "viral": 1, "pneumonia": 1}
    kept, targets = select(records, CXNET_CAP_VS_COVID)
    assert dict(zip((r.label for r in kept), targets.tolist())) == {"covid": 1, "bacterial": 0, "viral": 0, "pneumonia": 0}
    for task in TASKS.values():
        assert set(task.mapping.values()) == set(task.classes), task.name
