"""Synthetic chest X-ray phantoms: determinism, anatomy, class patterns, demo files."""

from __future__ import annotations

import runpy
import sys
from functools import lru_cache

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian
from scipy import ndimage as ndi

from core.classes import MANET_CLASSES
from core.phantoms import SYNTHETIC_WARNING, Phantom, make_phantom, write_demo_cases
from core.study import Study

SIZE = 256  # small enough to keep the suite quick; geometry does not depend on the size
SEEDS = (0, 1, 2, 3)
PATTERNS = [label for label in MANET_CLASSES if label != "normal"]


@lru_cache(maxsize=None)
def phantom(label: str, seed: int, size: int = SIZE) -> Phantom:
    return make_phantom(label, seed=seed, size=size)


def lungs(ph: Phantom) -> tuple[np.ndarray, np.ndarray]:
    """(image-left lung, image-right lung) masks: the patient's right and left."""
    labels, count = ndi.label(ph.lung_mask)
    assert count == 2
    first, second = labels == 1, labels == 2
    if np.nonzero(first)[1].mean() > np.nonzero(second)[1].mean():
        first, second = second, first
    return first, second


def relative_height(ph: Phantom, mask: np.ndarray) -> float:
    """Centroid row of ``mask`` within the lungs' vertical extent: 0 apex level, 1 base."""
    rows = np.nonzero(ph.lung_mask)[0]
    return float((np.nonzero(mask)[0].mean() - rows.min()) / (rows.max() - rows.min()))


def test_same_seed_same_pixels_and_different_seeds_differ():
    a = make_phantom("covid", seed=3, size=128)
    b = make_phantom("covid", seed=3, size=128)
    c = make_phantom("covid", seed=4, size=128)
    assert np.array_equal(a.pixels, b.pixels)
    assert np.array_equal(a.lung_mask, b.lung_mask) and np.array_equal(a.opacity_mask, b.opacity_mask)
    assert not np.array_equal(a.pixels, c.pixels)
    assert np.abs(a.pixels - c.pixels).mean() > 0.005
    assert (a.label, a.seed) == ("covid", 3)


def test_anatomy_depends_on_the_seed_only():
    normal, covid = phantom("normal", 1), phantom("covid", 1)
    assert np.array_equal(normal.lung_mask, covid.lung_mask)
    far_from_lungs = ~ndi.binary_dilation(normal.lung_mask, iterations=6)
    assert np.allclose(normal.pixels[far_from_lungs], covid.pixels[far_from_lungs], rtol=0, atol=1e-5)
    assert not np.allclose(normal.pixels, covid.pixels, rtol=0, atol=1e-5)


@pytest.mark.parametrize("label", MANET_CLASSES)
def test_range_dtype_shape_at_the_default_size(label):
    ph = make_phantom(label)
    assert ph.pixels.shape == ph.lung_mask.shape == ph.opacity_mask.shape == (512, 512)
    assert ph.pixels.dtype == np.float32
    assert ph.lung_mask.dtype == bool and ph.opacity_mask.dtype == bool
    assert np.isfinite(ph.pixels).all()
    assert ph.pixels.min() >= 0.0 and ph.pixels.max() <= 1.0
    assert ph.pixels.max() - ph.pixels.min() > 0.7  # uses the range: dark background, bright mediastinum


@pytest.mark.parametrize("size", [64, 201, 300])
def test_other_sizes(size):
    ph = make_phantom("tb", seed=2, size=size)
    assert ph.pixels.shape == (size, size)
    assert 0.15 <= ph.lung_mask.mean() <= 0.45


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_phantom("pneumothorax")
    with pytest.raises(ValueError):
        make_phantom("normal", seed=-1)
    with pytest.raises(ValueError):
        make_phantom("normal", size=16)


@pytest.mark.parametrize("seed", SEEDS)
def test_radiograph_convention_lungs_dark_mediastinum_bright(seed):
    ph = phantom("normal", seed)
    px, lung = ph.pixels, ph.lung_mask
    rows = np.nonzero(lung)[0]
    centre = np.zeros_like(lung)
    centre[rows.min() : rows.max(), SIZE // 2 - SIZE // 40 : SIZE // 2 + SIZE // 40] = True
    mediastinum = centre & ~lung
    background = px[: SIZE // 20, : SIZE // 20].mean()  # top corner, outside the body
    assert px[lung].mean() + 0.25 < px[mediastinum].mean()
    assert background < px[lung].mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_lung_mask_area_and_asymmetry(seed):
    ph = phantom("normal", seed)
    assert 0.15 <= ph.lung_mask.mean() <= 0.45
    right, left = lungs(ph)  # patient right = image left
    assert right.sum() > left.sum() * 1.05
    assert np.nonzero(right)[1].max() < SIZE // 2 < np.nonzero(left)[1].min()


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_has_no_opacity(seed):
    assert not phantom("normal", seed).opacity_mask.any()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("label", PATTERNS)
def test_opacity_is_inside_the_lungs_and_visible(label, seed):
    ph, normal = phantom(label, seed), phantom("normal", seed)
    opacity = ph.opacity_mask
    assert opacity.sum() > 0.002 * SIZE * SIZE
    assert (opacity & ph.lung_mask).sum() >= 0.95 * opacity.sum()
    # Same seed, same anatomy: the pattern makes its region brighter than in the normal phantom.
    assert ph.pixels[opacity].mean() > normal.pixels[opacity].mean() + 0.03


@pytest.mark.parametrize("seed", SEEDS)
def test_covid_is_bilateral_peripheral_and_lower_zone(seed):
    ph = phantom("covid", seed)
    right, left = lungs(ph)
    opacity = ph.opacity_mask
    assert relative_height(ph, opacity) > 0.5
    share_right = (opacity & right).sum() / opacity.sum()
    assert 0.15 < share_right < 0.85
    # Peripheral: nearer the chest wall than the lungs' own centres.
    cols = np.nonzero(opacity)[1]
    lung_cols = np.nonzero(ph.lung_mask)[1]
    assert np.abs(cols - SIZE / 2).mean() > np.abs(lung_cols - SIZE / 2).mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_tb_is_upper_zone_and_mostly_one_side(seed):
    ph = phantom("tb", seed)
    right, left = lungs(ph)
    opacity = ph.opacity_mask
    assert relative_height(ph, opacity) < 0.5
    share_right = (opacity & right).sum() / opacity.sum()
    assert max(share_right, 1.0 - share_right) >= 0.7


@pytest.mark.parametrize("seed", SEEDS)
def test_bacterial_is_one_lobe_of_one_lung(seed):
    ph = phantom("bacterial", seed)
    right, left = lungs(ph)
    opacity = ph.opacity_mask
    share_right = (opacity & right).sum() / opacity.sum()
    assert max(share_right, 1.0 - share_right) >= 0.9
    lung = right if share_right > 0.5 else left
    assert 0.1 < opacity.sum() / lung.sum() < 0.8  # a lobe, not the whole lung
    assert ph.pixels[opacity].std() < ph.pixels[lung & ~opacity].std() * 1.5  # homogeneous


@pytest.mark.parametrize("seed", SEEDS)
def test_viral_is_bilateral_and_perihilar(seed):
    ph = phantom("viral", seed)
    right, left = lungs(ph)
    opacity = ph.opacity_mask
    share_right = (opacity & right).sum() / opacity.sum()
    assert 0.25 < share_right < 0.75
    assert 0.3 < relative_height(ph, opacity) < 0.7
    cols = np.nonzero(opacity)[1]
    lung_cols = np.nonzero(ph.lung_mask)[1]
    assert np.abs(cols - SIZE / 2).mean() < np.abs(lung_cols - SIZE / 2).mean()  # central, near the hila


@pytest.mark.parametrize("seed", SEEDS)
def test_tb_cavity_has_a_bright_rim_and_a_darker_centre(seed):
    # Against the same seed's normal phantom: the opacity holds pixels much brighter (cavity walls,
    # nodules) and pixels no brighter, even darker (the air-filled cavity centres).
    ph, normal = phantom("tb", seed), phantom("normal", seed)
    diff = (ph.pixels - normal.pixels)[ph.opacity_mask]
    assert diff.max() > 0.15
    assert diff.min() < 0.0


def test_to_study():
    ph = phantom("viral", 2)
    study = ph.to_study()
    assert isinstance(study, Study)
    assert study.synthetic is True
    assert SYNTHETIC_WARNING in study.warnings
    assert SYNTHETIC_WARNING == "Synthetic phantom generated by the project: not a patient image."
    assert study.file_format == "png"
    assert study.pixels.dtype == np.float32 and np.array_equal(study.pixels, ph.pixels)
    assert study.pixels is not ph.pixels
    assert "viral" not in " ".join(f"{k} {v}" for k, v in study.metadata.items())  # no answer leaked


def test_write_demo_cases(tmp_path):
    paths = write_demo_cases(tmp_path / "demo", size=128)
    names = [p.name for p in paths]
    assert names == [f"synthetic_{label}.png" for label in MANET_CLASSES] + ["synthetic_normal_dx.dcm"]
    assert all(p.is_file() for p in paths)
    for path in paths[:-1]:
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (128, 128)
            assert np.asarray(image).max() > 200

    ds = pydicom.dcmread(paths[-1])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == DigitalXRayImageStorageForPresentation
    assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "DX"
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert str(ds.PatientName) == "SYNTHETIC^PHANTOM"
    assert ds.PatientID == "SYNTHETIC-0001"
    assert ds.ViewPosition == "PA"
    assert ds.BodyPartExamined == "CHEST"
    pixels = ds.pixel_array
    assert pixels.shape == (128, 128) and pixels.dtype == np.uint16
    assert 0 <= int(pixels.min()) and int(pixels.max()) <= 4095
    assert int(pixels.max()) > 3000

    again = write_demo_cases(tmp_path / "again", size=128)  # reproducible, UIDs included
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(paths, again))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # runpy: module already imported by this test file
def test_command_line_entry(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["core.phantoms", str(out)])
    runpy.run_module("core.phantoms", run_name="__main__", alter_sys=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"synthetic_{label}.png" for label in MANET_CLASSES] + ["synthetic_normal_dx.dcm"]
    )
    assert "synthetic_covid.png" in capsys.readouterr().out
