"""The one CT model input: what every CT network sees, in training and in serving.

The pack's CT slices (the training data) are 8-bit lung-window exports: 256 grey levels, no HU.
A slice uploaded in Hounsfield units is turned into the same thing: lung window
(``CT_MODEL_WINDOW``, [-1350, 150] HU), then quantised to 256 levels as an 8-bit export would be.
An 8-bit upload (PNG/JPEG, or a DICOM without HU) is used as exported. Networks then take
``core.preprocess.segmenter_input(ct_model_pixels(study), size)`` (square resize, per-image
min-max), which is the maths of ``training.segmentation.min_max_batch`` on the uint8 caches.
"""

from __future__ import annotations

import numpy as np

from ..study import Study
from .windowing import CT_MODEL_WINDOW, apply_window

GREY_LEVELS = 256  # an 8-bit export


def quantise(pixels: np.ndarray, levels: int = GREY_LEVELS) -> np.ndarray:
    """Round [0, 1] grey levels to ``levels`` steps (k / (levels - 1)), as saving an 8-bit image does."""
    steps = levels - 1
    return (np.round(np.clip(pixels, 0.0, 1.0) * steps) / steps).astype(np.float32)


def hu_to_model_pixels(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units -> lung window -> 256 grey levels, float32 in [0, 1]."""
    return quantise(apply_window(hu, CT_MODEL_WINDOW))


def _integer_hu_levels() -> np.ndarray:
    """uint8 grey level of every whole HU inside the model window (below it black, above it white)."""
    low, high = int(np.floor(CT_MODEL_WINDOW.low)), int(np.ceil(CT_MODEL_WINDOW.high))
    return np.round(hu_to_model_pixels(np.arange(low, high + 1)) * (GREY_LEVELS - 1)).astype(np.uint8)


_LEVELS_OF_WHOLE_HU = _integer_hu_levels()
_LOWEST_WHOLE_HU = int(np.floor(CT_MODEL_WINDOW.low))


def hu_to_model_levels(hu: np.ndarray) -> np.ndarray:
    """``hu_to_model_pixels`` as uint8 grey levels k (pixels = k / 255), for a volume's slices.

    A volume's HU are whole numbers (stored integers times an integer slope, plus an integer
    intercept) in all but odd files: those are read off a table of the window (one lookup per voxel
    instead of float64 arithmetic); anything else goes through ``hu_to_model_pixels`` itself.
    """
    hu = np.asarray(hu, dtype=np.float32)
    clipped = np.clip(hu, _LOWEST_WHOLE_HU, _LOWEST_WHOLE_HU + _LEVELS_OF_WHOLE_HU.size - 1)
    with np.errstate(invalid="ignore"):  # NaN casts to an arbitrary integer: caught just below
        whole = clipped.astype(np.int32)
    if np.array_equal(whole, clipped):  # also False for NaN, which the window maps to black
        return _LEVELS_OF_WHOLE_HU[whole - _LOWEST_WHOLE_HU]
    return np.round(hu_to_model_pixels(hu) * (GREY_LEVELS - 1)).astype(np.uint8)


def levels_to_model_pixels(levels: np.ndarray) -> np.ndarray:
    """uint8 grey levels -> float32 in [0, 1], bit for bit what ``hu_to_model_pixels`` returns."""
    return levels.astype(np.float32) / np.float32(GREY_LEVELS - 1)


def ct_model_pixels(study: Study) -> np.ndarray:
    """float32 2-D in [0, 1]: the HU slice as an 8-bit lung-window export, or an 8-bit upload as is."""
    if study.hu is not None:
        return hu_to_model_pixels(study.hu)
    return np.asarray(study.pixels, dtype=np.float32)
