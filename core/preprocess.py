"""Model-input preparation shared by serving and training, so the two can never differ.

Pixels enter as float32 in [0, 1] (``core.io`` guarantees it). Images are resized to a square
without keeping the aspect ratio: the segmenter and classifier were trained that way, and the
lung mask is resized back to the original shape afterwards.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize


def resize_square(pixels: np.ndarray, size: int, order: int = 1) -> np.ndarray:
    """Resize a 2-D array to ``size x size`` (bilinear for images, ``order=0`` for masks)."""
    out = resize(pixels, (size, size), order=order, preserve_range=True, anti_aliasing=order > 0 and min(pixels.shape) > size)
    return out.astype(np.float32)


def min_max(pixels: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (MANet stage 1); a constant image becomes all zeros."""
    low, high = float(pixels.min()), float(pixels.max())
    if high - low < 1e-8:
        return np.zeros_like(pixels, dtype=np.float32)
    return ((pixels - low) / (high - low)).astype(np.float32)


def segmenter_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """(1, size, size) float32 in [0, 1]."""
    return min_max(resize_square(pixels, size))[None]


def classifier_input(pixels: np.ndarray, lung_mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Segmented image in [-1, 1] (MANet stage 2) and the lung mask in {0, 1}, both (1, size, size).

    Outside the lungs the image is -1 (black), as after the paper's segmentation step.
    """
    mask = (resize_square(lung_mask.astype(np.float32), size, order=1) >= 0.5).astype(np.float32)
    image = min_max(resize_square(pixels, size)) * 2.0 - 1.0
    image = np.where(mask > 0, image, -1.0).astype(np.float32)
    return image[None], mask[None]
