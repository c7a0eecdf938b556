"""The CT slice model input and output resizes, for a stack of axial slices at once.

``core.preprocess.segmenter_input`` and ``core.lung.probability_to_shape`` resize one slice with
scikit-image (bilinear, Gaussian anti-aliasing when shrinking): about 5 ms per 512 x 512 slice, so
a 300-slice volume would spend seconds in resizes alone. Both resizes are linear and separable along
rows and columns, so each is two small matrices, ``out = R @ slice @ C.T``, read off scikit-image
itself by resizing the identity (same weights, same border handling), then applied to a whole batch
as two matrix products (under a millisecond per slice). The results equal the per-slice functions
to float32 rounding (tests/core/test_slice_batch.py), so a volume's slices see exactly what a single
uploaded slice sees.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage.transform import resize


@lru_cache(maxsize=32)
def axis_operator(n_in: int, n_out: int, anti_aliasing: bool) -> np.ndarray:
    """(n_out, n_in) float32: scikit-image's 1-D resize from ``n_in`` to ``n_out`` samples as a matrix.

    Resizing the identity along its first axis only (the second keeps its size: exactly the identity,
    no filtering) gives the weight of every input sample in every output sample.
    """
    identity = np.eye(n_in, dtype=np.float64)
    operator = resize(identity, (n_out, n_in), order=1, preserve_range=True, anti_aliasing=anti_aliasing)
    return operator.astype(np.float32)  # cached and shared: callers only read it


def resize_stack(stack: np.ndarray, shape: tuple[int, int], anti_aliasing: bool) -> np.ndarray:
    """(N, H, W) -> (N, *shape) float32, each slice as ``skimage.transform.resize(order=1)`` would."""
    import torch

    rows = torch.from_numpy(axis_operator(stack.shape[1], int(shape[0]), anti_aliasing))
    cols = torch.from_numpy(axis_operator(stack.shape[2], int(shape[1]), anti_aliasing))
    slices = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
    return (rows @ slices @ cols.T).numpy()


def segmenter_inputs(pixels: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) in [0, 1] -> (N, 1, size, size): ``core.preprocess.segmenter_input`` of each slice."""
    # resize_square's rule: anti-aliasing when the slice's shorter side is larger than the target
    resized = resize_stack(pixels, (size, size), anti_aliasing=min(pixels.shape[1:]) > size)
    low = resized.min(axis=(1, 2), keepdims=True)
    span = resized.max(axis=(1, 2), keepdims=True) - low
    # a constant slice becomes all zeros, as min_max does (the matrices' float32 rows do not sum to
    # exactly 1, so a constant slice is told by its own range, not only the resized one's)
    flat = (span < 1e-8) | (np.ptp(pixels, axis=(1, 2)) < 1e-8)[:, None, None]
    scaled = (resized - low) / np.where(flat, 1.0, span)
    return np.where(flat, 0.0, scaled).astype(np.float32)[:, None]


def probabilities_to_shape(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, h, w) in [0, 1] -> (N, *shape): ``core.lung.probability_to_shape`` of each map."""
    return np.clip(resize_stack(probabilities, shape, anti_aliasing=False), 0.0, 1.0)


def squares_to_size(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, s, s) -> (N, size, size): ``core.preprocess.resize_square`` of each (bilinear) map."""
    if maps.shape[1:] == (size, size):
        return np.asarray(maps, dtype=np.float32)
    return resize_stack(maps, (size, size), anti_aliasing=min(maps.shape[1:]) > size)
