"""Synthetic CT slice phantoms in HU: determinism, anatomy, lesions consistent with their masks, DICOM."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi

from core.ct_phantoms import (
    CONSOLIDATION_RANGE,
    CT_PHANTOM_LABELS,
    GGO_RANGE,
    CtPhantom,
    ct_phantom_dicom_bytes,
    field_of_view_mask,
    make_ct_phantom,
    write_ct_demo_cases,
)
from core.guard import check_ct_slice
from core.imaging import LUNG, apply_window
from core.imaging.regions import infected_side_boxes
from core.io import load_image
from core.phantoms import SYNTHETIC_WARNING

SIZE = 128
SEEDS = (0, 1, 2, 3, 4)


@lru_cache(maxsize=None)
def phantom(label: str, seed: int, size: int = SIZE) -> CtPhantom:
    return make_ct_phantom(label, seed=seed, size=size)


def test_same_seed_same_values_and_seeds_differ():
    again = make_ct_phantom("covid", seed=3, size=SIZE)
    assert np.array_equal(again.hu, phantom("covid", 3).hu)
    assert np.array_equal(again.infection_mask, phantom("covid", 3).infection_mask)
    assert not np.array_equal(phantom("covid", 3).hu, phantom("covid", 4).hu)


@pytest.mark.parametrize("seed", SEEDS)
def test_label_changes_only_the_lesions(seed):
    covid, clean = phantom("covid", seed), phantom("non-covid", seed)
    infected = covid.infection_mask > 0
    assert np.array_equal(covid.lung_mask, clean.lung_mask)
    assert np.array_equal(covid.hu[~infected], clean.hu[~infected])


@pytest.mark.parametrize("size", [64, 200, 256])
def test_any_size(size):
    ph = phantom("covid", 0, size)
    assert ph.hu.shape == ph.lung_mask.shape == ph.infection_mask.shape == (size, size)
    assert ph.hu.dtype == np.float32 and ph.infection_mask.dtype == np.uint8
    assert ph.pixel_spacing_mm == pytest.approx(360 / size)
    assert 0.08 < ph.lung_mask.mean() < 0.25


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_ct_phantom("tb")
    with pytest.raises(ValueError):
        make_ct_phantom("covid", size=16)
    assert CT_PHANTOM_LABELS == ("non-covid", "covid")


# --------------------------------------------------------------------------------------------------
# anatomy and masks agree with the HU
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_two_lungs_of_aerated_lung(seed):
    ph = phantom("covid", seed)
    assert ndi.label(ph.lung_mask)[1] == 2
    assert not (ph.lung_mask & ~ph.body_mask).any()
    parenchyma = ph.hu[ph.lung_mask & (ph.infection_mask == 0) & ~ph.vessel_mask]
    assert -900 < np.median(parenchyma) < -800
    assert np.mean(parenchyma < -700) > 0.97  # edges blurred against the chest wall only


@pytest.mark.parametrize("seed", SEEDS)
def test_air_outside_body_soft_tissue_and_bone_inside(seed):
    ph = phantom("non-covid", seed)
    outside = ~ndi.binary_dilation(ph.body_mask, iterations=2)
    assert np.all(ph.hu[outside] < -900)
    assert -1060 < np.median(ph.hu[outside]) < -940
    body = ph.body_mask & ~ph.lung_mask
    assert -150 < np.median(ph.hu[body]) < 100  # fat and soft tissue
    bone = ph.hu[body] > 350
    assert 0.01 < bone.mean() < 0.2
    assert np.percentile(ph.hu[body][bone], 95) <= 1000


@pytest.mark.parametrize("seed", SEEDS)
def test_lesion_masks_match_lesion_values(seed):
    ph = phantom("covid", seed)
    ggo = ph.ggo_mask & ~ph.vessel_mask
    consolidation = ph.consolidation_mask
    assert ggo.sum() > 20 and consolidation.sum() > 5
    assert np.all((ph.hu[ggo] >= GGO_RANGE[0]) & (ph.hu[ggo] <= GGO_RANGE[1]))
    assert np.all((ph.hu[consolidation] >= CONSOLIDATION_RANGE[0]) & (ph.hu[consolidation] <= CONSOLIDATION_RANGE[1]))
    assert not (ph.infection_mask.astype(bool) & ~ph.lung_mask).any()  # lesions are inside the lungs
    assert set(np.unique(ph.infection_mask)) == {0, 1, 2}
    assert (ph.ggo_mask & ph.vessel_mask).any() or ph.ggo_mask.sum() < 50  # vessels show through ground glass


@pytest.mark.parametrize("seed", SEEDS)
def test_covid_pattern_is_bilateral_and_peripheral(seed):
    ph = phantom("covid", seed)
    boxes = infected_side_boxes(ph.infection_mask, ph.lung_mask)
    assert boxes["right"] is not None and boxes["left"] is not None
    depth = ndi.distance_transform_edt(ph.lung_mask)
    patches, count = ndi.label(ph.infection_mask > 0)
    for k in range(1, count + 1):  # every patch reaches the outer rim of its lung (subpleural)
        assert depth[patches == k].min() <= 0.035 * SIZE + 1


def test_non_covid_has_no_lesion():
    for seed in SEEDS:
        assert not phantom("non-covid", seed).infection_mask.any()


# --------------------------------------------------------------------------------------------------
# the phantom as a Study and as a DICOM file
# --------------------------------------------------------------------------------------------------


def test_to_study():
    ph = phantom("covid", 0)
    study = ph.to_study()
    assert study.synthetic and study.modality == "CT" and study.warnings == [SYNTHETIC_WARNING]
    assert np.array_equal(study.hu, ph.hu) and study.hu is not ph.hu
    assert np.array_equal(study.pixels, apply_window(ph.hu, LUNG))
    assert study.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    check_ct_slice(study)


@pytest.mark.parametrize(
    "kwargs, tolerance",
    [({}, 0.5), ({"slope": 0.5}, 0.25), ({"slope": 2.0, "intercept": 0.0}, 1.0), ({"signed": False, "padding_value": 0}, 0.5)],
)
def test_dicom_round_trip(kwargs, tolerance):
    ph = phantom("covid", 2)
    study = load_image(ct_phantom_dicom_bytes(ph, **kwargs))
    inside = field_of_view_mask(SIZE)
    floor = -1024 if kwargs.get("signed") is False else -np.inf  # unsigned storage clips at -1024
    assert np.abs(study.hu[inside] - np.maximum(ph.hu, floor)[inside]).max() <= tolerance + 1e-3
    assert np.all(study.hu[~inside] <= -1024)  # padding is air
    assert study.modality == "CT" and study.pixel_spacing_mm == pytest.approx((360 / SIZE, 360 / SIZE))
    assert check_ct_slice(study).warnings == []


def test_dicom_carries_a_fake_identity_that_the_loader_drops():
    data = ct_phantom_dicom_bytes(phantom("non-covid", 0))
    ds = pydicom.dcmread(__import__("io").BytesIO(data))
    assert str(ds.PatientName) == "Phantom^Synthetic CT" and ds.PixelPaddingValue == -2000
    assert ds.ImageOrientationPatient == [1, 0, 0, 0, 1, 0] and ds.PixelRepresentation == 1
    study = load_image(data)
    assert "Phantom" not in repr(study.metadata) and "SYNTHETIC-CT" not in repr(study.metadata)


def test_dicom_overrides_and_deletions():
    data = ct_phantom_dicom_bytes(phantom("non-covid", 0), Modality=None, BodyPartExamined="THORAX")
    study = load_image(data)
    assert study.modality is None and study.body_part == "THORAX" and study.hu is not None


def test_write_ct_demo_cases(tmp_path):
    paths = write_ct_demo_cases(tmp_path, size=96)
    assert sorted(p.name for p in paths) == [
        "synthetic-ct-covid-lung-window.png", "synthetic-ct-covid.dcm",
        "synthetic-ct-non-covid-lung-window.png", "synthetic-ct-non-covid.dcm",
    ]
    for path in paths:
        study = check_ct_slice(load_image(path.read_bytes()))
        assert study.pixels.shape == (96, 96)
        assert (study.hu is None) == (path.suffix == ".png")
