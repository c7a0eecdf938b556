"""Contrast enhancement for COVID-CXNet (Haghanifar et al., Sec. 3): CLAHE, BEASF, histogram matching.

The paper feeds the network three channels: the original image, its CLAHE and its BEASF (gamma 1.5)
enhancements; for the multi-class set every image is first histogram-matched to one reference image.
Serving and training both build the model input here, so the two cannot drift apart.

Every function takes a 2-D float array in [0, 1] and returns float32 in [0, 1] of the same shape.
A constant image has no contrast to enhance and comes back unchanged (BEASF: to its 8-bit
quantisation), never as NaN.
"""

from __future__ import annotations

import numpy as np
from skimage.exposure import equalize_adapthist, match_histograms

LEVELS = 256  # BEASF and CLAHE work on 8-bit grey levels, as in the paper's (OpenCV, uint8) pipeline

# The authors' code runs OpenCV's CLAHE with clipLimit=2.0 on an 8x8 tile grid. OpenCV clips each tile's
# histogram at clipLimit * tile_pixels / 256; scikit-image clips at clip_limit * tile_pixels, so the same
# clip is clip_limit = 2 / 256. scikit-image's default kernel (1/8 of each side) is the same 8x8 grid.
CLAHE_CLIP_LIMIT = 2.0 / LEVELS
CLAHE_TILES = 8

# BEASF maps each half's tone range onto [-2.5, 2.5] before the sigmoid (Arriaga-Garcia et al.'s code).
SIGMOID_SPAN = 5.0


def clahe(pixels: np.ndarray) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalization, 8x8 tiles, OpenCV-equivalent clip limit 2.0.

    scikit-image stretches the input to its full range first, so the result does not depend on the
    input's window; a constant image (which scikit-image would turn white) is returned unchanged.
    """
    image = _checked(pixels)
    if _is_constant(image):
        return image.copy()
    kernel = tuple(max(side // CLAHE_TILES, 1) for side in image.shape)
    out = equalize_adapthist(image, kernel_size=kernel, clip_limit=CLAHE_CLIP_LIMIT, nbins=LEVELS)
    return _as_unit_float(out)


def beasf(pixels: np.ndarray, gamma: float = 1.5) -> np.ndarray:
    """Bi-histogram Equalization with Adaptive Sigmoid Functions (Arriaga-Garcia et al., CONIELECOMP 2014).

    COVID-CXNet uses it with ``gamma = 1.5`` and cites the original; the formula below follows the
    original authors' MATLAB code as ported by the COVID-CXNet authors. On 8-bit levels x:

    1. Split at the mean: m = floor(mean(x)); lower tones [a, b] = [0, m], upper tones [m + 1, 255]
       (the brightness-preserving split of BBHE).
    2. For each half, the adaptive centre c is the tone where the half's own cumulative histogram
       first exceeds 0.5 (the median of the sub-histogram; the midpoint if the half holds no pixels).
    3. The half's cumulative histogram is replaced by a sigmoid centred there, with slope gamma::

           s(t) = 1 / (1 + exp(-gamma * 5 * (t - c) / (b - a)))

       (the half's tone range spans 5 units of the sigmoid's argument).
    4. Each half is equalised into its own output range by stretching the sigmoid onto [a, b]::

           f(t) = a + (b - a) * (s(t) - s(a)) / (s(b) - s(a))

    Larger gamma means a steeper sigmoid: more contrast around each half's median, less in the tails.
    The mapping is a 256-entry lookup table, non-decreasing, with f(0) = 0 and f(255) = 255. The input
    is quantised to 256 levels, like the paper's 8-bit images. Unlike the port, f is not truncated to
    integers, and the upper half starts at m + 1 (the port maps both m and m + 1 to m).
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    image = _checked(pixels)
    levels = np.rint(image * (LEVELS - 1)).astype(np.intp)
    counts = np.bincount(levels.ravel(), minlength=LEVELS)
    split = int(levels.mean())
    lut = np.concatenate([
        _sigmoid_equalise(counts, 0, split, gamma),
        _sigmoid_equalise(counts, split + 1, LEVELS - 1, gamma),
    ])
    return (lut[levels] / (LEVELS - 1)).astype(np.float32)


def match_histogram(pixels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Remap grey levels so the image's histogram matches ``reference``'s (the paper's multi-class step).

    The output takes its values from the reference, so it stays in [0, 1].
    """
    out = match_histograms(_checked(pixels), _checked(reference))
    return _as_unit_float(out)


def cxnet_channels(pixels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 in [0, 1]: the original, CLAHE and BEASF (gamma 1.5) images, in that order."""
    image = _checked(pixels)
    return np.stack([image, clahe(image), beasf(image)])


def _sigmoid_equalise(counts: np.ndarray, low: int, high: int, gamma: float) -> np.ndarray:
    """BEASF's output levels for the tones ``low..high`` (steps 2-4 above); empty if ``high < low``."""
    tones = np.arange(low, high + 1, dtype=np.float64)
    if high <= low:  # zero or one tone: nothing to spread
        return tones
    centre = _sub_histogram_median(counts[low:high + 1], low, high)
    argument = gamma * SIGMOID_SPAN * (tones - centre) / (high - low)
    sigmoid = 0.5 * (1.0 + np.tanh(argument / 2.0))  # = 1 / (1 + exp(-argument)), without overflow
    return low + (high - low) * (sigmoid - sigmoid[0]) / (sigmoid[-1] - sigmoid[0])


def _sub_histogram_median(counts: np.ndarray, low: int, high: int) -> float:
    total = counts.sum()
    if total == 0:
        return (low + high) / 2.0
    cumulative = np.cumsum(counts) / total
    return float(low + np.searchsorted(cumulative, 0.5, side="right"))


def _checked(pixels: np.ndarray) -> np.ndarray:
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {image.shape}")
    if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
        raise ValueError("pixels must be finite and in [0, 1]")
    return image


def _is_constant(image: np.ndarray) -> bool:
    return float(image.max() - image.min()) < 1e-8


def _as_unit_float(image: np.ndarray) -> np.ndarray:
    # Guards float32 round-off only: every caller's values are already in [0, 1].
    return np.clip(image, 0.0, 1.0).astype(np.float32)
