"""Paper 002's regions on hand-made arrays: heat map (Eq. 1), crop box (Eq. 2), left/right infected boxes."""

from __future__ import annotations

import numpy as np
import pytest

from core.imaging.regions import (
    DEFAULT_TAU,
    body_midline,
    branch_input,
    crop_to_square,
    heatmap_crop_box,
    heatmap_from_features,
    infected_side_boxes,
    largest_region_box,
)

# --------------------------------------------------------------------------------------------------
# Eq. 1
# --------------------------------------------------------------------------------------------------


def test_heatmap_is_the_normalised_sum_of_the_feature_maps():
    features = np.array([[[0, 1], [2, 3]], [[1, 1], [1, 1]]], dtype=np.float32)  # sum: [[1, 2], [3, 4]]
    heatmap = heatmap_from_features(features, (2, 2))
    assert heatmap.dtype == np.float32
    np.testing.assert_allclose(heatmap, [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)


def test_heatmap_of_post_relu_features_is_eq1_literally():
    """min 0: (sum - min) / max(sum), as printed in the paper."""
    rng = np.random.default_rng(0)
    features = np.maximum(rng.normal(size=(8, 5, 5)), 0)
    features[:, 0, 0] = 0.0
    summed = features.sum(0)
    assert np.allclose(heatmap_from_features(features, (5, 5)), (summed - summed.min()) / summed.max(), atol=1e-6)


def test_heatmap_with_negative_features_still_spans_0_to_1():
    features = np.array([[[-2, 0], [2, 2]]], dtype=np.float32)
    np.testing.assert_allclose(heatmap_from_features(features, (2, 2)), [[0, 0.5], [1, 1]], atol=1e-6)


def test_heatmap_is_resized_to_the_image():
    features = np.zeros((3, 7, 7), dtype=np.float32)
    features[1, 5, 6] = 4.0  # a peak near the bottom right
    heatmap = heatmap_from_features(features, (224, 200))
    assert heatmap.shape == (224, 200)
    assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0)
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert row / 224 == pytest.approx(5.5 / 7, abs=0.05) and col / 200 == pytest.approx(6.5 / 7, abs=0.08)


def test_constant_heatmap_is_all_zeros():
    assert not heatmap_from_features(np.ones((2, 3, 3)), (6, 6)).any()


def test_heatmap_needs_channels_rows_columns():
    with pytest.raises(ValueError):
        heatmap_from_features(np.ones((3, 3)), (3, 3))


# --------------------------------------------------------------------------------------------------
# Eq. 2 and the largest connected region
# --------------------------------------------------------------------------------------------------


def test_crop_box_is_the_box_of_the_largest_region_above_tau():
    heatmap = np.zeros((10, 12), dtype=np.float32)
    heatmap[2:4, 3:6] = 0.9  # 6 pixels
    heatmap[7, 9] = 1.0  # 1 pixel, the peak
    assert heatmap_crop_box(heatmap) == (slice(2, 4), slice(3, 6))
    assert DEFAULT_TAU == 0.75


def test_crop_box_threshold_is_strict():
    heatmap = np.full((4, 4), 0.75, dtype=np.float32)
    assert heatmap_crop_box(heatmap, tau=0.75) is None
    heatmap[1, 2] = 0.76
    assert heatmap_crop_box(heatmap, tau=0.75) == (slice(1, 2), slice(2, 3))


def test_smaller_tau_gives_a_larger_box():
    yy, xx = np.mgrid[0:21, 0:21]
    heatmap = 1.0 - np.hypot(yy - 10, xx - 10) / 15  # a cone
    small, large = heatmap_crop_box(heatmap, 0.75), heatmap_crop_box(heatmap, 0.5)
    assert (small[0].stop - small[0].start) < (large[0].stop - large[0].start)


def test_diagonal_neighbours_are_one_region():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # 3 pixels touching by corners
    mask[0, 5] = mask[1, 5] = True  # 2 pixels
    assert largest_region_box(mask) == (slice(1, 4), slice(1, 4))
    assert largest_region_box(np.zeros((3, 3), bool)) is None


# --------------------------------------------------------------------------------------------------
# infected boxes, left and right
# --------------------------------------------------------------------------------------------------


def test_infected_boxes_use_the_radiological_convention():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[3:5, 1:3] = 1  # image left: the patient's right
    mask[5:7, 7:9] = 2  # image right: the patient's left (consolidation counts as infection)
    boxes = infected_side_boxes(mask)
    assert boxes == {"right": (slice(3, 5), slice(1, 3)), "left": (slice(5, 7), slice(7, 9))}


def test_one_sided_infection_leaves_the_other_side_empty():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4, 5:7] = True
    assert infected_side_boxes(mask) == {"right": None, "left": (slice(2, 4), slice(5, 7))}
    assert infected_side_boxes(np.zeros((8, 8))) == {"right": None, "left": None}


def test_lesion_across_the_midline_is_split():
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:3, 2:6] = True  # midline at column 4
    assert infected_side_boxes(mask) == {"right": (slice(1, 3), slice(2, 4)), "left": (slice(1, 3), slice(4, 6))}


def test_midline_comes_from_the_lung_mask_when_given():
    lungs = np.zeros((10, 12), dtype=bool)
    lungs[2:8, 4:12] = True  # lungs' box: columns 4..11 -> midline at 8 (the image centre is 6)
    assert body_midline(lungs.shape, lungs) == 8.0
    assert body_midline(lungs.shape) == 6.0
    assert body_midline(lungs.shape, np.zeros_like(lungs)) == 6.0  # no lungs: the image centre
    infection = np.zeros_like(lungs)
    infection[4, 7] = True  # right of the image centre, left of the lungs' midline
    assert infected_side_boxes(infection)["left"] == (slice(4, 5), slice(7, 8))
    assert infected_side_boxes(infection, lungs) == {"right": (slice(4, 5), slice(7, 8)), "left": None}


# --------------------------------------------------------------------------------------------------
# branch inputs
# --------------------------------------------------------------------------------------------------


def test_crop_to_square_crops_then_resizes():
    pixels = np.arange(100, dtype=np.float32).reshape(10, 10) / 100
    crop = crop_to_square(pixels, (slice(2, 4), slice(5, 7)), 2)
    assert crop.dtype == np.float32
    np.testing.assert_allclose(crop, [[0.25, 0.26], [0.35, 0.36]], atol=1e-6)
    big = crop_to_square(pixels, (slice(2, 4), slice(5, 9)), 16)
    assert big.shape == (16, 16)
    assert 0.25 - 1e-6 <= big.min() and big.max() <= 0.38 + 1e-6


def test_no_box_gives_a_blank_input():
    assert crop_to_square(np.ones((5, 5)), None, 8).tolist() == np.zeros((8, 8)).tolist()
    assert branch_input(np.ones((5, 5)), None, 8).shape == (1, 8, 8)
    assert not branch_input(np.ones((5, 5)), None, 8).any()


def test_branch_input_is_min_max_normalised():
    pixels = np.linspace(0.2, 0.6, 64, dtype=np.float32).reshape(8, 8)
    out = branch_input(pixels, (slice(0, 8), slice(0, 8)), 16)
    assert out.shape == (1, 16, 16) and out.min() == 0.0 and out.max() == pytest.approx(1.0)
