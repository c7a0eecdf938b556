"""The batched slice resizes equal the per-slice functions the CT slice pipeline uses."""

import numpy as np
import pytest

from core.imaging.slice_batch import probabilities_to_shape, segmenter_inputs, squares_to_size
from core.lung import probability_to_shape
from core.preprocess import resize_square, segmenter_input


@pytest.mark.parametrize("shape", [(96, 96), (70, 90), (40, 40), (64, 30)])
@pytest.mark.parametrize("size", [64, 48])
def test_segmenter_inputs_equal_segmenter_input_per_slice(shape, size):
    rng = np.random.default_rng(0)
    pixels = rng.random((3, *shape)).astype(np.float32)
    pixels[2] = 0.25  # a constant slice becomes zeros
    batch = segmenter_inputs(pixels, size)
    assert batch.shape == (3, 1, size, size) and batch.dtype == np.float32
    for got, image in zip(batch, pixels):
        np.testing.assert_allclose(got, segmenter_input(image, size), atol=2e-6)


@pytest.mark.parametrize("shape", [(96, 96), (70, 130), (32, 32)])
def test_probabilities_to_shape_equal_the_per_slice_resize(shape):
    rng = np.random.default_rng(1)
    probabilities = rng.random((4, 40, 40)).astype(np.float32)
    batch = probabilities_to_shape(probabilities, shape)
    assert batch.shape == (4, *shape)
    for got, small in zip(batch, probabilities):
        np.testing.assert_allclose(got, probability_to_shape(small, shape), atol=2e-6)


def test_squares_to_size_equals_resize_square():
    maps = np.random.default_rng(2).random((2, 40, 40)).astype(np.float32)
    for size in (40, 64, 24):
        for got, one in zip(squares_to_size(maps, size), maps):
            np.testing.assert_allclose(got, resize_square(one, size), atol=2e-6)


def test_volume_levels_equal_the_slice_model_pixels():
    from core.imaging.ct_input import hu_to_model_levels, hu_to_model_pixels, levels_to_model_pixels

    hu = np.round(np.random.default_rng(3).uniform(-3000, 3000, (2, 64, 64))).astype(np.float32)
    for values in (hu, hu + 0.3, np.where(hu > 1000, np.nan, hu)):
        levels = hu_to_model_levels(values)
        assert levels.dtype == np.uint8
        assert np.array_equal(levels_to_model_pixels(levels), hu_to_model_pixels(values))
