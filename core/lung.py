"""Lung segmentation as served: preprocess, run a segmenter, resize back, threshold, clean up.

The segmenter is any callable mapping a float32 batch (N, 1, S, S) in [0, 1] to logits (N, 1, S, S),
so ONNX Runtime and PyTorch serve through the same code, and training uses it too.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .imaging.resample import resize as bilinear
from .postprocess import manet_postprocess
from .preprocess import segmenter_input

Segmenter = Callable[[np.ndarray], np.ndarray]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def lung_probability_small(pixels: np.ndarray, segmenter: Segmenter, size: int) -> np.ndarray:
    """Lung probability in [0, 1] at the segmenter's own ``size x size`` resolution."""
    return sigmoid(segmenter(segmenter_input(pixels, size)[None])[0, 0])


def lung_probability(pixels: np.ndarray, segmenter: Segmenter, size: int) -> np.ndarray:
    """Lung probability in [0, 1] at the image's own shape."""
    return probability_to_shape(lung_probability_small(pixels, segmenter, size), pixels.shape)


def probability_to_shape(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear, without anti-aliasing (``core.imaging.resample``: scikit-image's numbers), within [0, 1] (clipped
    while small: the interpolation stays within its input's range)."""
    return bilinear(np.clip(prob, 0.0, 1.0), shape).astype(np.float32)


def lung_mask_from_probability(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Threshold, then MANet's post-processing (fill holes, remove small objects)."""
    return manet_postprocess(prob >= threshold)


def predict_lung_mask(pixels: np.ndarray, segmenter: Segmenter, size: int) -> np.ndarray:
    return lung_mask_from_probability(lung_probability(pixels, segmenter, size))
