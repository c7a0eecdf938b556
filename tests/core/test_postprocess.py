import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import gaussian

from core.postprocess import (
    HRNET_MIN_AREA_FRACTION,
    components_touching,
    hrnet_postprocess,
    label_components,
    manet_postprocess,
    measure_lungs,
    passes_min_area,
)


def two_lungs(shape=(200, 200)):
    mask = np.zeros(shape, bool)
    mask[40:160, 20:90] = True  # image left = patient's right lung, larger
    mask[50:150, 120:180] = True
    return mask


def test_manet_fills_holes_and_removes_small_objects():
    mask = two_lungs()
    mask[80:90, 40:50] = False  # a hole inside the right lung
    mask[5:8, 5:8] = True  # 9-pixel speck
    cleaned = manet_postprocess(mask, min_object_fraction=0.001)  # 40 pixels at 200x200
    assert cleaned[85, 45] and not cleaned[6, 6]
    assert cleaned.sum() == two_lungs().sum()


def test_hrnet_dilation_then_closing_grows_by_eight_pixels():
    mask = np.zeros((100, 100), bool)
    mask[50, 50] = True
    out = hrnet_postprocess(mask)
    # 8 dilations with a 3x3 cross give a diamond of radius 8; closing keeps a convex diamond intact.
    assert out[50, 58] and not out[50, 59] and out[42, 50] and not out[41, 50]
    assert out.sum() == 2 * 8 * 9 + 1


def test_minimum_area_rule_scales_from_512():
    assert np.isclose(HRNET_MIN_AREA_FRACTION, 50_000 / 512**2)
    mask = np.zeros((512, 512), bool)
    mask.flat[:49_999] = True
    assert not passes_min_area(mask)
    mask.flat[:50_000] = True
    assert passes_min_area(mask)


def test_measure_lungs_splits_left_and_right():
    lungs = measure_lungs(two_lungs())
    assert lungs.components == 2
    assert np.isclose(lungs.right_lung_fraction, 120 * 70 / 40_000)
    assert np.isclose(lungs.left_lung_fraction, 100 * 60 / 40_000)
    assert np.isclose(lungs.area_fraction, lungs.right_lung_fraction + lungs.left_lung_fraction)
    assert lungs.right_to_left_ratio > 1


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("face_neighbours_only", [True, False])
def test_label_components_finds_ndimage_components(seed, face_neighbours_only):
    """Same components as ``ndimage.label`` (numbered perhaps otherwise), 2-D and 3-D, views included. Seed 2's
    2-D mask is one on which cc3d 4.1.1 labelled background pixels when given the boolean array itself."""
    rng = np.random.default_rng(seed)
    ndim = 3 if seed % 4 == 3 else 2
    shape = tuple(rng.integers(20, 300, 2)) if seed == 2 else tuple(rng.integers(2, 90 if ndim == 2 else 25, ndim))
    mask = gaussian(rng.random(shape), rng.uniform(1, 6) if seed == 2 else rng.uniform(0, 3)) > rng.uniform(0.45, 0.55)
    mask = mask if seed % 5 else mask[tuple(slice(1, None, 2 if axis == 0 else 1) for axis in range(ndim))]
    labels, count = label_components(mask, face_neighbours_only)
    expected, expected_count = ndimage.label(mask, ndimage.generate_binary_structure(ndim, 1 if face_neighbours_only else ndim))
    assert count == expected_count and labels.shape == mask.shape
    assert np.array_equal(labels > 0, mask) and (labels.max() if labels.size else 0) == count
    pairs = set(zip(labels.ravel().tolist(), expected.ravel().tolist()))
    assert len(pairs) == count + (not mask.all())  # one ndimage label for each of ours: the same partition


def test_components_touching_keeps_whole_regions_that_overlap_the_reference():
    lungs = np.zeros((20, 20), bool)
    lungs[2:18, 2:10] = True
    infected = np.zeros((20, 20), bool)
    infected[5:8, 8:13] = True  # straddles the lung border: kept whole, outside part included
    infected[8, 13] = True  # joined to it by a corner (8-connected): kept
    infected[14:16, 15:18] = True  # outside the lungs: dropped
    expected = infected.copy()
    expected[14:16, 15:18] = False
    assert np.array_equal(components_touching(infected, lungs), expected)
    assert not components_touching(np.zeros_like(infected), lungs).any()
    # a stack: each slice on its own, so a region touching the lungs on one slice keeps nothing on another
    stack = np.stack([infected, infected])
    reference = np.stack([lungs, np.zeros_like(lungs)])
    assert np.array_equal(components_touching(stack, reference), np.stack([expected, np.zeros_like(expected)]))
    assert components_touching(stack[:0], reference[:0]).shape == (0, 20, 20)
