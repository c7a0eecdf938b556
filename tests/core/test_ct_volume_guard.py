"""The CT volume guard: what the CT volume pipeline must not see is refused with a specific message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import core.io.volume as volume_module
from core.errors import FileTooLargeError, ImageTooSmallError, UnsupportedInputError
from core.guard import MIN_SLICES, check_ct_volume, check_lung_coverage
from core.guard.ct_volume import field_of_view_warning
from core.io import dicom_series_bytes, load_volume, volume_from_canonical
from core.io.series import FAKE_IDENTITY
from tests.core.test_volume_io import CHEST, LUNGS, SPACING, tiny_chest, uploads


def chest_volume(hu=CHEST, spacing=SPACING, **changes):
    return dataclasses.replace(volume_from_canonical(hu, spacing), **changes)


def refused(volume, error=UnsupportedInputError) -> str:
    with pytest.raises(error) as caught:
        check_ct_volume(volume)
    message = str(caught.value)
    for value in FAKE_IDENTITY.values():
        assert value.split("^")[0] not in message
    return message


def test_a_chest_ct_passes_without_warnings():
    volume = check_ct_volume(load_volume(uploads(dicom_series_bytes(CHEST, SPACING, shuffle_seed=0))))
    assert volume.warnings == []
    assert check_ct_volume(chest_volume()).warnings == []


@pytest.mark.parametrize("modality, words", [
    ("MR", "an MR (magnetic resonance) image series"),
    ("PT", "a PET image series"),
    ("US", "an ultrasound image series"),
])
def test_other_modalities_are_refused(modality, words):
    volume = load_volume(uploads(dicom_series_bytes(CHEST, SPACING, modality=modality)))
    message = refused(volume)
    assert words in message and "chest CT volumes only" in message


@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_radiographs_are_sent_to_the_chest_xray_page(modality):
    assert "Chest X-ray page" in refused(chest_volume(modality=modality, file_format="dicom-series"))


def test_ot_and_missing_modality_are_accepted_with_a_warning_when_plainly_hu():
    assert "'OT' (other)" in check_ct_volume(chest_volume(modality="OT")).warnings[0]
    volume = check_ct_volume(chest_volume(modality=None, file_format="dicom-series"))
    assert "no Modality tag" in volume.warnings[0]


def test_missing_modality_without_hu_is_refused():
    values = (CHEST + 1024) / 4096  # normalised, no HU
    message = refused(chest_volume(values, modality=None, file_format="dicom-series"))
    assert "no Modality tag" in message


@pytest.mark.parametrize("values, words", [
    (LUNGS.astype(np.float32) + (CHEST > 600), "segmentation mask or label map"),
    (np.clip((CHEST + 1000) / 1400, 0, 1), "between 0 and 1"),
    (np.rint(np.clip((CHEST + 1000) / 1400, 0, 1) * 255), "between 0 and 255"),
    (CHEST + 1024, "rescale intercept"),
    (np.full(CHEST.shape, -3024.0), "far below the value of air"),
    (CHEST + 1e4 * (CHEST > -900), "above the CT range"),
])
def test_values_that_are_not_hu_are_named(values, words):
    message = refused(chest_volume(np.asarray(values, dtype=np.float32)))
    assert "not CT Hounsfield units" in message and words in message


def test_too_few_slices_says_the_number():
    message = refused(chest_volume(CHEST[:5]))
    assert f"only 5 axial slices; at least {MIN_SLICES}" in message
    single = load_volume(uploads(dicom_series_bytes(CHEST[:1], SPACING)))
    assert "single slice" in single.warnings[0]
    assert "single CT slice" in refused(single)


def test_small_slices_are_refused():
    assert "32 x 32 voxels" in refused(chest_volume(tiny_chest((18, 32, 32))), ImageTooSmallError)


def test_a_volume_too_large_for_memory_says_the_limit(monkeypatch):
    monkeypatch.setattr(volume_module, "MAX_VOXELS", 50_000)
    message = refused(chest_volume(), FileTooLargeError)
    assert "18 x 64 x 72 = 82,944 voxels; the limit is 50,000 voxels" in message


def test_thick_slices_and_coarse_voxels_are_refused():
    assert "12.0 mm apart" in refused(chest_volume(spacing=(12.0, 0.8, 0.7)))
    assert "6.0 mm wide" in refused(chest_volume(spacing=(2.5, 6.0, 0.7)))


def rotated_affine(degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.7, -0.8, 2.5])
    return affine


def test_oblique_grids_are_refused_or_flagged():
    assert "oblique reformat (30 degrees" in refused(chest_volume(source_affine=rotated_affine(30)))
    assert "10 degrees from the patient's axes" in check_ct_volume(chest_volume(source_affine=rotated_affine(10))).warnings[0]


@pytest.mark.parametrize("lung_ml, slices, accepted", [
    (1384, 112, True),  # the pack's chest crop, served lung model
    (3500, 60, True),
    (582, 96, False),  # the pack's abdomen/pelvis scan: bowel gas and the lung bases
    (1500, 5, False),
])
def test_lung_coverage(lung_ml, slices, accepted):
    if accepted:
        check_lung_coverage(lung_ml, slices)
    else:
        with pytest.raises(UnsupportedInputError, match="Too little lung is in view"):
            check_lung_coverage(lung_ml, slices)


def test_lungs_cut_by_the_field_of_view_are_flagged():
    lungs = np.zeros((40, 64, 64), bool)
    lungs[5:35, 10:50, 8:28] = True  # right lung, inside the image
    lungs[5:35, 10:50, 36:56] = True
    assert field_of_view_warning(lungs) is None
    lungs[5:30, 20:40, 56:] = True  # the left lung runs off the image's edge on 25 of 30 lung slices
    warning = field_of_view_warning(lungs)
    assert "field of view cuts through the lungs" in warning and "25 of 30 axial slices" in warning
    lungs[5:30, 20:40, 56:] = False
    lungs[5:7, 20:40, 56:] = True  # two slices at the edge: an apex or a base grazing it, no warning
    assert field_of_view_warning(lungs) is None
