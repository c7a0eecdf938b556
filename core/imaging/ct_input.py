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


def ct_model_pixels(study: Study) -> np.ndarray:
    """float32 2-D in [0, 1]: the HU slice as an 8-bit lung-window export, or an 8-bit upload as is."""
    if study.hu is not None:
        return hu_to_model_pixels(study.hu)
    return np.asarray(study.pixels, dtype=np.float32)
