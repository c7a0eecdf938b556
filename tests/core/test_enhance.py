"""COVID-CXNet's contrast enhancements (``core.enhance``) on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from core.enhance import beasf, clahe, cxnet_channels, match_histogram


def low_contrast_image(size: int = 64) -> np.ndarray:
    """Smooth blobs squeezed into [0.45, 0.55], like a washed-out radiograph."""
    y, x = np.mgrid[0:size, 0:size] / size
    pattern = np.sin(6 * np.pi * x) * np.cos(4 * np.pi * y)
    return (0.5 + 0.05 * pattern).astype(np.float32)


def local_contrast(image: np.ndarray, block: int = 8) -> float:
    """Mean standard deviation over non-overlapping ``block x block`` tiles."""
    h, w = image.shape
    tiles = image[: h - h % block, : w - w % block].reshape(h // block, block, w // block, block)
    return float(tiles.std(axis=(1, 3)).mean())


def cumulative_histogram(image: np.ndarray, bins: int = 64) -> np.ndarray:
    counts, _ = np.histogram(image, bins=bins, range=(0.0, 1.0))
    return np.cumsum(counts) / counts.sum()


def test_clahe_raises_local_contrast():
    image = low_contrast_image()
    out = clahe(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert local_contrast(out) > 3 * local_contrast(image)


def test_beasf_output_is_float32_in_unit_range():
    image = np.random.default_rng(0).random((40, 48)).astype(np.float32) ** 2
    out = beasf(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_beasf_mapping_is_monotone_non_decreasing():
    image = np.random.default_rng(1).beta(2, 5, (50, 50)).astype(np.float32)
    out = beasf(image).ravel()
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(out[order]) >= 0)


def test_beasf_spreads_a_narrow_histogram():
    image = np.random.default_rng(2).uniform(0.4, 0.6, (64, 64)).astype(np.float32)
    out = beasf(image)
    assert out.std() > 2 * image.std()
    assert out.max() - out.min() > 2 * (image.max() - image.min())


def test_beasf_keeps_the_extreme_levels():
    image = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    image[0, 0], image[0, 1] = 0.0, 1.0
    out = beasf(image)
    assert out[0, 0] == 0.0 and out[0, 1] == 1.0


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_constant_images_give_no_nan(value):
    image = np.full((16, 16), value, dtype=np.float32)
    for out in (beasf(image), clahe(image), cxnet_channels(image)):
        assert np.isfinite(out).all()
        assert np.allclose(out, value, atol=0.5 / 255)


def test_beasf_rejects_a_non_positive_gamma():
    with pytest.raises(ValueError, match="gamma"):
        beasf(np.zeros((4, 4), np.float32), gamma=0.0)


def test_histogram_matching_follows_the_reference():
    rng = np.random.default_rng(4)
    image = rng.uniform(0.0, 1.0, (64, 64)).astype(np.float32)
    reference = rng.beta(5, 2, (48, 56)).astype(np.float32)
    out = match_histogram(image, reference)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    gap_before = np.abs(cumulative_histogram(image) - cumulative_histogram(reference)).max()
    gap_after = np.abs(cumulative_histogram(out) - cumulative_histogram(reference)).max()
    assert gap_before > 0.3 and gap_after < 0.03


def test_cxnet_channels_are_original_clahe_beasf():
    image = low_contrast_image(48)
    channels = cxnet_channels(image)
    assert channels.shape == (3, 48, 48) and channels.dtype == np.float32
    np.testing.assert_array_equal(channels[0], image)
    np.testing.assert_array_equal(channels[1], clahe(image))
    np.testing.assert_array_equal(channels[2], beasf(image))


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4)), np.full((4, 4), 1.5), np.full((4, 4), np.nan)])
def test_inputs_must_be_2d_in_unit_range(bad):
    with pytest.raises(ValueError):
        cxnet_channels(bad)
