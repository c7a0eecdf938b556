"""Paper 002's local regions (Nguyen et al., "Attention with multiple sources knowledges for COVID-19
from CT images"): the heat-map crop and the left/right infected boxes. Training and serving both
build the branch inputs with these functions.

Boxes are ``(rows, cols)`` pairs of slices in the image's pixel grid (``pixels[box]`` is the crop).
Sides are the patient's, in the radiological convention of axial CT: the patient's right is on the
image's left.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from ..preprocess import min_max, resize_square

Box = tuple[slice, slice]
DEFAULT_TAU = 0.75  # the paper's best threshold (Eq. 2)
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def heatmap_from_features(features: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Attention heat map H of Eq. 1, float32 in [0, 1] at ``shape``.

    ``features`` (C, h, w): the last convolutional feature maps f_k before global pooling. Their sum
    over k is resized (bilinear) to the image ``shape``, then H = (S - min S) / max(S - min S): for
    post-ReLU features (min 0) this is Eq. 1's (sum_k f_k - min) / max; dividing by the max of the
    shifted map keeps H in [0, 1] in every case. A constant map gives all zeros.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 3:
        raise ValueError(f"features must be (C, h, w), got shape {features.shape}")
    summed = features.sum(axis=0)
    if summed.shape != tuple(shape):
        summed = resize(summed, shape, order=1, preserve_range=True, anti_aliasing=False)
    shifted = summed - summed.min()
    peak = float(shifted.max())
    if not math.isfinite(peak) or peak <= 0:
        return np.zeros(shape, dtype=np.float32)
    return (shifted / peak).astype(np.float32)


def largest_region_box(mask: np.ndarray) -> Box | None:
    """Bounding box of the largest 8-connected region of ``mask`` (the first one on a tie), None if empty."""
    labels, count = ndi.label(np.asarray(mask, dtype=bool), structure=_EIGHT_NEIGHBOURS)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    return ndi.find_objects((labels == largest).astype(np.int32))[0]


def heatmap_crop_box(heatmap: np.ndarray, tau: float = DEFAULT_TAU) -> Box | None:
    """The heat-map branch's crop: B = H > tau (Eq. 2), its largest connected region, that region's box."""
    return largest_region_box(np.asarray(heatmap) > tau)


def body_midline(shape: tuple[int, int], lung_mask: np.ndarray | None = None) -> float:
    """Column (in pixels, a float) of the body's midline: the centre of the lungs' bounding box, else the image centre."""
    if lung_mask is not None:
        cols = np.flatnonzero(np.asarray(lung_mask, dtype=bool).any(axis=0))
        if cols.size:
            return (cols[0] + cols[-1] + 1) / 2
    return shape[1] / 2


def _bounding_box(mask: np.ndarray, col_offset: int) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]) + col_offset, int(cols[-1]) + 1 + col_offset)


def infected_side_boxes(infection_mask: np.ndarray, lung_mask: np.ndarray | None = None) -> dict[str, Box | None]:
    """The infected branch's boxes: ``{"right": box | None, "left": box | None}``, the patient's sides.

    Any non-zero pixel of ``infection_mask`` is infection (binary masks and 0/1/2 GGO/consolidation
    masks alike). The image is split at the body midline (``body_midline``): columns left of it hold
    the patient's right side, the rest the left side; each side's box bounds the infection on that
    side (a lesion across the midline is split between the two). None where a side has none.
    """
    infected = np.asarray(infection_mask) != 0
    split = int(np.clip(math.floor(body_midline(infected.shape, lung_mask) + 0.5), 0, infected.shape[1]))
    return {
        "right": _bounding_box(infected[:, :split], 0),
        "left": _bounding_box(infected[:, split:], split),
    }


def crop_to_square(pixels: np.ndarray, box: Box | None, size: int) -> np.ndarray:
    """``pixels[box]`` resized to ``size x size`` (aspect not kept, as every model input); all zeros when ``box`` is None."""
    if box is None:
        return np.zeros((size, size), dtype=np.float32)
    crop = np.asarray(pixels, dtype=np.float32)[box]
    if crop.size == 0:
        return np.zeros((size, size), dtype=np.float32)
    return resize_square(crop, size)


def branch_input(pixels: np.ndarray, box: Box | None, size: int) -> np.ndarray:
    """(1, size, size) network input of a local branch: the crop, per-image min-max (the CT input rule); blank without a box."""
    return min_max(crop_to_square(pixels, box, size))[None]
