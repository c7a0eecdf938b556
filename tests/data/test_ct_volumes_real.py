"""The pack's two real CT volumes through the volume loader and guard (skipped when the pack is absent).

``mediastinum_crop`` is stored L-P-S at 1.5 mm, ``abdomen_pelvis`` R-A-S at 3 mm (the pack's README):
both must land in the canonical frame with anatomy where it belongs (spine posterior, liver on the
patient's right and at the inferior end of the chest crop, heart left of the spine), and masks
written back must line up with the file's own voxel grid. The lung-coverage thresholds are checked
with the served CT lung model: the chest crop passes, the abdomen with only the lung bases does not.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from core.errors import UnsupportedInputError
from core.guard import check_ct_volume, check_lung_coverage
from core.imaging.ct_input import hu_to_model_pixels
from core.io import load_nifti, load_volume_path, write_source_nifti
from core.lung import lung_mask_from_probability, lung_probability_small, probability_to_shape
from core.registry import Registry
from core.runtime import OnnxModel
from tests.conftest import DATA

VOLUMES = DATA / "ct_volumes"
CHEST_CROP = VOLUMES / "mediastinum_crop.nii.gz"
ABDOMEN = VOLUMES / "abdomen_pelvis.nii.gz"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not (CHEST_CROP.is_file() and ABDOMEN.is_file()), reason="real data pack not present"),
]

EXPECTED = {  # name: (path, canonical shape [z, y, x], spacing, stored orientation)
    "mediastinum_crop": (CHEST_CROP, (112, 102, 122), 1.5, "LPS"),
    "abdomen_pelvis": (ABDOMEN, (112, 101, 122), 3.0, "RAS"),
}


@pytest.fixture(scope="module")
def volumes():
    return {name: check_ct_volume(load_volume_path(path)) for name, (path, *_rest) in EXPECTED.items()}


@pytest.mark.parametrize("name", EXPECTED)
def test_geometry_and_hu(volumes, name):
    _path, shape, spacing, orientation = EXPECTED[name]
    volume = volumes[name]
    assert volume.hu.shape == shape
    assert volume.spacing_mm == pytest.approx((spacing,) * 3, abs=1e-3)
    assert volume.metadata["Orientation"] == orientation
    assert volume.warnings == []
    assert -1300 < volume.hu.min() < -900 and 1000 < volume.hu.max() < 4000
    assert -1100 < np.median(volume.hu[volume.hu < -500]) < -700  # lung and air
    assert ((volume.hu > 20) & (volume.hu < 80)).mean() > 0.05  # soft tissue and blood
    assert ((volume.hu > -150) & (volume.hu < -50)).mean() > 0.01  # fat


@pytest.mark.parametrize("name, ends", [("mediastinum_crop", slice(0, 14)), ("abdomen_pelvis", slice(-14, None))])
def test_spine_is_posterior_and_liver_on_the_right(volumes, name, ends):
    """At the liver level (the inferior end of the chest crop, the superior end of the abdomen scan)."""
    hu = volumes[name].hu[ends]
    _nz, ny, nx = hu.shape
    bone_mid = (hu > 250)[:, :, nx // 3: 2 * nx // 3]
    assert ndi.center_of_mass(bone_mid)[1] / ny > 0.6  # high y: posterior
    liver = (hu > 30) & (hu < 150)
    assert liver[:, :, : nx // 2].sum() > 1.3 * liver[:, :, nx // 2:].sum()  # small x: the patient's right


def test_head_and_feet_of_the_chest_crop(volumes):
    """The liver fills the inferior slices; aerated lung the superior ones."""
    hu = volumes["mediastinum_crop"].hu
    inferior, superior = hu[:14], hu[-14:]
    assert ((inferior > 30) & (inferior < 150)).mean() > 3 * ((superior > 30) & (superior < 150)).mean()
    assert (superior < -500).mean() > 3 * (inferior < -500).mean()


def test_heart_is_left_of_the_spine(volumes):
    hu = volumes["mediastinum_crop"].hu
    ny = hu.shape[1]
    spine = hu[:14] > 250
    spine[:, : 3 * ny // 4] = False
    heart = (hu[14:56] > -20) & (hu[14:56] < 600)
    heart[:, 3 * ny // 4:] = False
    labels, count = ndi.label(heart)
    largest = labels == 1 + np.argmax(ndi.sum(heart, labels, range(1, count + 1)))
    assert ndi.center_of_mass(largest)[2] > ndi.center_of_mass(spine)[2] + 5  # larger x: the patient's left


@pytest.mark.parametrize("name", EXPECTED)
def test_masks_written_back_line_up_with_the_file(volumes, name, tmp_path):
    path = EXPECTED[name][0]
    original = nib.load(path)
    mask = volumes[name].hu > 200
    out = tmp_path / f"{name}_bone.nii.gz"
    write_source_nifti(mask, volumes[name], out)
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj) == 1, np.asarray(original.dataobj) > 200)
    np.testing.assert_array_equal(load_nifti(out.read_bytes()).hu > 0, mask)


def served_lungs(volume, registry: Registry) -> tuple[float, int]:
    """(lung ml, slices with lung) from the served 2-D CT lung model, slice by slice, no 3-D clean-up."""
    card = registry.default("ct-lung-segmentation")
    model = OnnxModel(registry.verified_path(card, "onnx"))
    slices = []
    for hu in volume.hu:
        pixels = hu_to_model_pixels(hu)
        probability = lung_probability_small(pixels, model, card.input_size)
        slices.append(lung_mask_from_probability(probability_to_shape(probability, pixels.shape)))
    lungs = np.stack(slices)
    return float(lungs.sum() * volume.voxel_volume_ml), int(lungs.any(axis=(1, 2)).sum())


def test_lung_coverage_thresholds_on_the_served_lung_model(volumes, bundled_weights_dir):
    registry = Registry.open(bundled_weights_dir)
    chest_ml, chest_slices = served_lungs(volumes["mediastinum_crop"], registry)
    check_lung_coverage(chest_ml, chest_slices)
    abdomen_ml, abdomen_slices = served_lungs(volumes["abdomen_pelvis"], registry)
    with pytest.raises(UnsupportedInputError, match="Too little lung"):
        check_lung_coverage(abdomen_ml, abdomen_slices)


def test_the_chest_crop_cuts_through_the_lungs_and_the_page_says_so(volumes, bundled_weights_dir):
    """The crop's lungs run off the image on most slices: the served result warns that its volumes are partial."""
    from core.pipelines.ct_volume import CtVolumePipeline

    result = CtVolumePipeline(Registry.open(bundled_weights_dir)).analyse(volumes["mediastinum_crop"])
    assert any("field of view cuts through the lungs" in w for w in result.warnings)
    assert 1000 < result.lung_volume_ml["total"] < 2000  # 1,380 ml measured (2026-12-01)
