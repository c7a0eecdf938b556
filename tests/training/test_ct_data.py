"""CT records, split rules and uint8 caches on a generated CT pack."""

from collections import Counter

import numpy as np
import pytest

from tests.training.ct_pack import synthetic_ct_slice, write_ct_pack
from training.ct_data import (
    MEDSEG_SUBSETS, SARSCOV2_SPLIT_NOTE, image_stack, infection_stack, lung_stack, medseg_holdout_split,
    read_ct_infection_records, read_ct_slice_records,
)
from training.data import DataNotFoundError, resolve_data_root, stack_resized
from tests.training.conftest import write_pack


@pytest.fixture
def ct_pack(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    return write_ct_pack(tmp_path / "data")


def test_infection_records_resolve_paths_and_kinds(ct_pack):
    records = read_ct_infection_records(ct_pack)
    assert Counter(r.mask_kind for r in records) == {"binary": 24, "multiclass": 12, "none": 4}
    assert all(r.image.is_file() for r in records)
    assert all(r.mask.is_file() for r in records if r.mask_kind != "none")
    assert all(r.mask is None for r in records if r.mask_kind == "none")
    ma2020 = [r for r in records if r.subset == "ma2020-slices"]
    assert all(r.lung_mask.is_file() for r in ma2020)
    assert [r.split for r in ma2020[:4]] == ["train", "train", "val", "test"]  # the pack's split, kept


def test_medseg_holdout_is_deterministic_and_shared_by_both_subsets(ct_pack):
    records = read_ct_infection_records(ct_pack)
    by_subset = {s: {r.image.name: r.split for r in records if r.subset == s} for s in MEDSEG_SUBSETS}
    assert by_subset["doctor-label"] == by_subset["multiclass-train"]  # same slices, same split
    assert Counter(by_subset["doctor-label"].values()) == {"test": 10, "val": 2}  # 12 slices: 10 test first
    names = [f"{i}.jpg" for i in range(50)]
    split = medseg_holdout_split(names)
    assert Counter(split.values()) == {"train": 35, "test": 10, "val": 5}
    assert split == medseg_holdout_split(list(reversed(names)))  # order of the csv does not matter


def test_ucsd_gets_a_patient_wise_split_and_sarscov2_keeps_its_own(ct_pack):
    records = read_ct_slice_records(ct_pack)
    assert {r.split for r in records} <= {"train", "val", "test"}
    splits_per_patient = {}
    for r in records:
        if r.source == "ucsd-covid-ct":
            splits_per_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_per_patient.values())
    sars = [r for r in records if r.source == "sarscov2-ct"]
    assert [r.split for r in sars[:3]] == ["train", "val", "test"]
    assert "no patient ids" in SARSCOV2_SPLIT_NOTE


def test_caches_keep_binary_and_multiclass_labels(ct_pack):
    records = read_ct_infection_records(ct_pack)
    multi = [r for r in records if r.mask_kind == "multiclass"]
    binary = [r for r in records if r.subset == "doctor-label"]
    labels = infection_stack(multi, 32)
    assert labels.dtype == np.uint8 and labels.shape == (12, 32, 32)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert set(np.unique(infection_stack(binary, 32))) == {0, 1}
    # nearest neighbour keeps the labels where they were: the binary stack is the union of the classes
    assert np.array_equal(infection_stack(binary, 32), (labels > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="one mask kind"):
        infection_stack(multi + binary, 32)
    ma2020 = [r for r in records if r.subset == "ma2020-slices"]
    assert set(np.unique(lung_stack(ma2020, 32))) == {0, 1}
    with pytest.raises(ValueError, match="no lung mask"):
        lung_stack(binary, 32)
    images = image_stack(ma2020, 32)
    assert images.dtype == np.uint8 and images.max() > 100


def test_multiclass_resize_is_nearest_neighbour(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    from PIL import Image

    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4], labels[4:, 4:] = 1, 2
    Image.fromarray(labels).save(tmp_path / "m.png")
    small = stack_resized([tmp_path / "m.png"], 4, multiclass=True)[0]
    assert np.array_equal(small, labels[::2, ::2])
    big = stack_resized([tmp_path / "m.png"], 16, multiclass=True)[0]
    assert set(np.unique(big)) == {0, 1, 2} and np.array_equal(big[::2, ::2], labels)


def test_synthetic_slice_is_deterministic():
    a, b = synthetic_ct_slice(3), synthetic_ct_slice(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_resolve_data_root_finds_ct_only_folders_and_keeps_the_xray_rule(ct_pack, tmp_path, monkeypatch):
    monkeypatch.delenv("CHEST_DATA", raising=False)
    assert resolve_data_root(ct_pack, collections=("ct_infection",)) == ct_pack
    assert resolve_data_root(ct_pack, collections=("ct_infection", "ct_slices")) == ct_pack
    monkeypatch.setenv("CHEST_DATA", str(ct_pack))
    with pytest.raises(DataNotFoundError, match="ct_volumes/labels.csv"):  # no candidate holds it
        resolve_data_root(tmp_path / "nowhere", collections=("ct_volumes",))
    write_pack(ct_pack)  # now it holds cxr/labels.csv too
    assert resolve_data_root(ct_pack) == ct_pack
    assert resolve_data_root(None) == ct_pack  # through $CHEST_DATA, default collections ("cxr",)
