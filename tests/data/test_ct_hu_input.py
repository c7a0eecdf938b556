"""Train = serve for CT on real HU: slices of the pack's real CT volume through ``ct_model_pixels`` look like
the pack's 8-bit lung-window slices the CT models train on (skipped when the pack or nibabel is absent).

The pack's slices carry no HU, so both sides are compared the same way: each image is split into its
dark and bright classes by Otsu's threshold, and the medians of the two classes (aerated lung; soft
tissue, fat and bone) are compared. The HU side is also checked on HU bands directly. A wrong
window (the mediastinum window) must fail the same comparison, so the check has teeth.
"""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from core.imaging import LUNG, MEDIASTINUM, apply_window, ct_model_pixels
from core.io import load_image
from core.preprocess import segmenter_input
from core.study import Study
from tests.conftest import DATA

VOLUME = DATA / "ct_volumes" / "mediastinum_crop.nii.gz"
SLICES = DATA / "ct_slices" / "labels.csv"
PACK_IMAGES_PER_SOURCE = 60
TOLERANCE = 0.12  # grey levels in [0, 1]

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not (VOLUME.is_file() and SLICES.is_file()), reason="real data pack not present"),
]


def otsu_medians(pixels: np.ndarray) -> tuple[float, float]:
    """(median of the dark class, median of the bright class) under Otsu's threshold."""
    threshold = threshold_otsu(pixels)
    return float(np.median(pixels[pixels <= threshold])), float(np.median(pixels[pixels > threshold]))


@pytest.fixture(scope="module")
def hu_slices() -> list[np.ndarray]:
    """Every 8th axial slice of the real volume in HU, displayed radiologically (anterior up, patient's right on the left)."""
    nib = pytest.importorskip("nibabel")
    volume = nib.as_closest_canonical(nib.load(VOLUME))
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    hu = np.asarray(volume.dataobj).astype(np.float32)
    # RAS+: i runs from the patient's left to right, j from posterior to anterior. Rows = anterior first
    # (j reversed), columns = the patient's right first (i reversed).
    return [np.ascontiguousarray(hu[:, :, z].T[::-1, ::-1]) for z in range(16, hu.shape[2] - 8, 8)]


@pytest.fixture(scope="module")
def pack_images() -> dict[str, list[np.ndarray]]:
    """Per source, a fixed sample of the pack's 8-bit slices as the CT models get them (``ct_model_pixels``)."""
    with open(SLICES, newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    images: dict[str, list] = {}
    for row in rows:
        source = images.setdefault(row["source"], [])
        if len(source) < PACK_IMAGES_PER_SOURCE:
            source.append(ct_model_pixels(load_image((SLICES.parent / row["image"]).read_bytes())))
    return images


@pytest.fixture(scope="module")
def pack_medians(pack_images) -> dict[str, np.ndarray]:
    """Per source: (n, 2) Otsu class medians."""
    return {source: np.array([otsu_medians(p) for p in images]) for source, images in pack_images.items()}


def hu_study(hu: np.ndarray) -> Study:
    return Study(pixels=apply_window(hu, LUNG), file_format="nifti", modality="CT", hu=hu)


def test_real_hu_through_the_loader_gives_the_same_model_input(hu_slices):
    """A CT DICOM written from the real slice (int16, intercept -1024) loads to the same model input."""
    from tests.core.conftest import ct_dataset, to_bytes

    hu = hu_slices[len(hu_slices) // 2]
    study = load_image(to_bytes(ct_dataset(hu, signed=True, intercept=-1024.0)))
    assert np.array_equal(study.hu, hu)
    assert np.array_equal(ct_model_pixels(study), ct_model_pixels(hu_study(hu)))


def test_real_hu_slices_look_like_the_packs_lung_window_slices(hu_slices, pack_images, pack_medians, capsys):
    model = [ct_model_pixels(hu_study(hu)) for hu in hu_slices]
    ours = np.array([otsu_medians(pixels) for pixels in model])
    ours_lung, ours_body = np.mean(ours, axis=0)
    pack = np.concatenate(list(pack_medians.values()))
    pack_lung, pack_body = np.median(pack, axis=0)

    # on HU bands: aerated lung and soft tissue where the lung window puts them
    lung_band = np.mean([np.median(p[(hu > -950) & (hu < -700)]) for p, hu in zip(model, hu_slices)])
    soft_band = np.mean([np.median(p[(hu > 0) & (hu < 100)]) for p, hu in zip(model, hu_slices)])
    normalised = np.mean([otsu_medians(segmenter_input(p, 256)[0]) for p in model], axis=0)
    by_source = {source: np.median(values, axis=0).round(3).tolist() for source, values in pack_medians.items()}
    pack_normalised = np.median(
        [otsu_medians(segmenter_input(p, 256)[0]) for images in pack_images.values() for p in images], axis=0
    )
    with capsys.disabled():
        print(f"\nreal HU ({len(model)} slices) -> ct_model_pixels: Otsu lung {ours_lung:.3f}, body {ours_body:.3f}; "
              f"HU bands lung {lung_band:.3f}, soft tissue {soft_band:.3f}; "
              f"network input (min-max) {normalised.round(3).tolist()}")
        print(f"pack 8-bit slices ({len(pack)}): Otsu lung {pack_lung:.3f}, body {pack_body:.3f}; per source {by_source}; "
              f"network input (min-max) {pack_normalised.round(3).tolist()}")

    assert ours_lung < 0.45 < 0.75 < ours_body and pack_lung < 0.45 < 0.75 < pack_body
    assert abs(ours_lung - pack_lung) < TOLERANCE
    assert abs(ours_body - pack_body) < TOLERANCE
    assert abs((ours_body - ours_lung) - (pack_body - pack_lung)) < TOLERANCE
    assert abs(lung_band - pack_lung) < TOLERANCE


def test_a_wrong_window_fails_the_same_comparison(hu_slices, pack_medians):
    wrong = np.mean([otsu_medians(apply_window(hu, MEDIASTINUM)) for hu in hu_slices], axis=0)
    pack_lung, _ = np.median(np.concatenate(list(pack_medians.values())), axis=0)
    assert abs(wrong[0] - pack_lung) > 2 * TOLERANCE
