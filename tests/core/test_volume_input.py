"""The 3D classifier's input (paper 004, Sec. IV-B): lung masking, resampling, window, pad/crop, and
the way back for the attention map."""

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from core.imaging.volume_input import (
    PAPER_SHAPE,
    Placement,
    attention_to_volume,
    classifier_input,
    mask_input,
    network_spacing,
    plan_placement,
    quantise,
)


def noisy_volume(shape, seed=0):
    return np.random.default_rng(seed).normal(-600, 400, shape).astype(np.float32)


def block(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_network_spacing_is_the_paper_spacing_times_the_factor():
    assert network_spacing(2) == pytest.approx((2.5, 1.4336, 1.4336))
    assert network_spacing(1) == pytest.approx((1.25, 0.7168, 0.7168))


def test_at_the_network_spacing_it_is_mask_window_and_centred_padding():
    hu = noisy_volume((10, 20, 16))
    lungs = block(hu.shape, (2, 3, 4), (9, 17, 12))
    x, placement = classifier_input(hu, lungs, network_spacing(2), target_shape=(14, 24, 24), factor=2)
    assert placement.zoom == pytest.approx((1, 1, 1))
    assert placement.start == (-2, -2, -4)
    expected = np.where(lungs, np.clip((hu + 1350) / 1500, 0, 1), 0)
    assert np.abs(x[2:12, 2:22, 4:20] - expected).max() <= 0.5 / 255 + 1e-6
    assert x[:2].max() == 0 and x[12:].max() == 0 and x[:, :, :4].max() == 0
    assert x.dtype == np.float32 and np.array_equal(np.round(x * 255) / 255, x)  # 8-bit levels
    assert np.array_equal(quantise(x).astype(np.float32) / 255, x)


def test_matches_trilinear_interpolation_of_the_masked_volume():
    hu = noisy_volume((40, 60, 50), seed=1)
    lungs = block(hu.shape, (5, 10, 8), (30, 50, 45))
    x, placement = classifier_input(hu, lungs, (2.0, 1.1, 0.9), target_shape=(30, 40, 40), factor=2)
    masked = np.where(lungs, hu, -1350.0)
    grid = np.meshgrid(*[np.clip(placement.source_coordinates(a), 0, hu.shape[a] - 1) for a in range(3)], indexing="ij")
    reference = np.clip((map_coordinates(masked, grid, order=1, mode="nearest") + 1350) / 1500, 0, 1)
    inside = np.ix_(*[placement.inside_volume(a) for a in range(3)])
    expected = np.zeros_like(x)
    expected[inside] = reference[inside]
    assert np.abs(expected - x).max() <= 0.5 / 255 + 1e-6


def test_a_large_volume_is_cropped_around_the_lungs():
    shape = (200, 64, 64)
    hu = noisy_volume(shape)
    lungs = block(shape, (150, 10, 10), (190, 50, 50))  # lungs high up in a long scan
    placement = plan_placement(shape, network_spacing(2), lungs, target_shape=(40, 64, 64), factor=2)
    assert placement.zoom[0] == pytest.approx(1.0)
    window = np.arange(40) + placement.start[0]
    assert window[0] <= 150 and window[-1] >= 189
    x, _ = classifier_input(hu, lungs, network_spacing(2), target_shape=(40, 64, 64), factor=2)
    assert (x > 0).sum() == pytest.approx((lungs & (np.clip((hu + 1350) / 1500, 0, 1) > 0.5 / 255)).sum(), rel=0.01)


def test_outside_the_lungs_is_zero_and_empty_lungs_give_zeros():
    hu = np.full((20, 30, 30), 100.0, np.float32)  # soft tissue everywhere: would be bright if not masked
    lungs = block(hu.shape, (5, 5, 5), (15, 25, 25))
    x, placement = classifier_input(hu, lungs, (2.5, 1.4336, 1.4336), target_shape=(24, 32, 32), factor=2)
    inside = mask_input(lungs, placement).astype(bool)
    assert np.all(x[~inside] < 1.0)
    eroded = mask_input(block(hu.shape, (7, 7, 7), (13, 23, 23)), placement).astype(bool)
    assert np.allclose(x[eroded], (100 + 1350) / 1500, atol=1 / 255)
    empty, _ = classifier_input(hu, np.zeros_like(lungs), (2.5, 1.4336, 1.4336), target_shape=(24, 32, 32), factor=2)
    assert not empty.any()


def test_mask_input_keeps_the_physical_volume():
    shape = (60, 100, 100)
    mask = block(shape, (10, 20, 30), (40, 70, 80))
    placement = plan_placement(shape, (1.25, 0.7, 0.7), mask, target_shape=(40, 64, 64), factor=2)
    small = mask_input(mask.astype(np.uint8) * 2, placement)  # labels > 0 count
    assert set(np.unique(small)) == {0, 1}
    voxel_ratio = np.prod(placement.zoom)
    assert small.sum() == pytest.approx(mask.sum() * voxel_ratio, rel=0.15)


def test_attention_comes_back_onto_the_volume_grid():
    shape, spacing = (50, 80, 70), (2.0, 0.9, 1.1)
    lungs = block(shape, (5, 10, 10), (45, 70, 60))
    placement = plan_placement(shape, spacing, lungs, target_shape=(48, 64, 64), factor=2)

    def field(axis_coords):  # a smooth field of the source coordinates
        z, y, x = np.meshgrid(*axis_coords, indexing="ij")
        return (np.sin(z / 9.0) + np.cos(y / 13.0) * np.sin(x / 11.0) + 2) / 4

    on_network = field([placement.source_coordinates(a) for a in range(3)]).astype(np.float32)
    back = attention_to_volume(on_network, placement, shape)
    truth = field([np.arange(s, dtype=float) for s in shape])
    assert back.shape == shape and back.dtype == np.float32
    assert np.abs(back - truth)[2:-2, 2:-2, 2:-2].max() < 0.02


def test_attention_outside_the_network_window_is_zero():
    shape = (200, 32, 32)
    lungs = block(shape, (150, 5, 5), (190, 27, 27))
    placement = plan_placement(shape, network_spacing(2), lungs, target_shape=(40, 32, 32), factor=2)
    back = attention_to_volume(np.ones(placement.target_shape, np.float32), placement)
    covered = np.arange(40) + placement.start[0]
    assert back[covered[0]:covered[-1] + 1].min() == pytest.approx(1.0)
    assert back[:covered[0]].max() == 0 and back[covered[-1] + 1:].max() == 0


def test_placement_round_trips_through_json_dicts():
    placement = Placement((10, 20, 30), (0.5, 0.25, 0.3), (-3, 0, 2), PAPER_SHAPE)
    assert Placement.from_dict(placement.to_dict()) == placement


def test_shape_mismatches_are_refused():
    with pytest.raises(ValueError, match="lung mask"):
        classifier_input(np.zeros((4, 5, 6)), np.zeros((4, 5, 5), bool), (1, 1, 1))
    placement = plan_placement((4, 5, 6), (1, 1, 1), None, (8, 8, 8), 1)
    with pytest.raises(ValueError):
        attention_to_volume(np.zeros((4, 4, 4)), placement)
    with pytest.raises(ValueError):
        mask_input(np.zeros((4, 5, 5)), placement)
