"""Clean-up of predicted lung masks and the quantities read off them.

Two published recipes:
* MANet (scikit-image): fill holes, remove small objects;
* UNet + HRNet (Ahmed et al.): dilation (8 iterations), closing (2 iterations), and refuse masks whose
  lung area is below 50,000 pixels at 512 x 512 (about 19% of the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import morphology

HRNET_MIN_AREA_FRACTION = 50_000 / (512 * 512)


def manet_postprocess(mask: np.ndarray, min_object_fraction: float = 0.005) -> np.ndarray:
    """Fill holes, then drop connected components smaller than a fraction of the image."""
    mask = ndimage.binary_fill_holes(mask.astype(bool))
    min_size = max(int(min_object_fraction * mask.size), 1)
    return morphology.remove_small_objects(mask, max_size=min_size - 1) if min_size > 1 else mask


def hrnet_postprocess(mask: np.ndarray, dilation_iterations: int = 8, closing_iterations: int = 2) -> np.ndarray:
    """Dilation then closing with a 3x3 cross, as the paper's OpenCV calls with default kernels."""
    mask = ndimage.binary_dilation(mask.astype(bool), iterations=dilation_iterations)
    return ndimage.binary_closing(mask, iterations=closing_iterations)


def cxnet_roi_mask(lung_probability: np.ndarray, dilation_iterations: int) -> np.ndarray:
    """COVID-CXNet's lung region: the cleaned mask, dilated so that the lung borders stay inside the crop."""
    mask = manet_postprocess(lung_probability >= 0.5)
    if dilation_iterations <= 0 or not mask.any():  # scipy reads 0 iterations as "until nothing changes"
        return mask
    return ndimage.binary_dilation(mask, iterations=dilation_iterations)


def passes_min_area(mask: np.ndarray, min_fraction: float = HRNET_MIN_AREA_FRACTION) -> bool:
    """The HRNet paper's minimum-area check, scaled from 512 x 512 to any image size."""
    return float(mask.astype(bool).mean()) >= min_fraction


@dataclass(frozen=True)
class LungMeasurements:
    area_fraction: float  # lung pixels / image pixels
    right_lung_fraction: float  # patient's right lung = image left (radiological convention)
    left_lung_fraction: float
    components: int

    @property
    def right_to_left_ratio(self) -> float:
        return self.right_lung_fraction / self.left_lung_fraction if self.left_lung_fraction else float("inf")


def measure_lungs(mask: np.ndarray) -> LungMeasurements:
    """Split the mask at the image midline between lung centroids: each component goes to the side of its centroid.

    The image is assumed to be a frontal view displayed in the radiological convention (patient's
    right on the viewer's left), which is how PA/AP radiographs are stored.
    """
    mask = mask.astype(bool)
    labels, components = ndimage.label(mask, structure=np.ones((3, 3), bool))  # 8-connected, as skimage's connectivity=2
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=components + 1)[1:]
    column_sums = np.bincount(flat, weights=np.tile(np.arange(mask.shape[1], dtype=np.float64), mask.shape[0]),
                              minlength=components + 1)[1:]
    on_right = column_sums / np.maximum(areas, 1) < mask.shape[1] / 2.0  # the centroid's column (exact: integer sums)
    total = float(mask.size)
    return LungMeasurements(float(mask.mean()), float(areas[on_right].sum() / total), float(areas[~on_right].sum() / total),
                            int(components))
