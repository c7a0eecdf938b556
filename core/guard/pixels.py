"""Pixel rules every page applies before its own: a 2-D image, big enough, close to square, not blank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ImageTooSmallError, UnsupportedInputError

MIN_SIDE_PX = 64  # shorter side
MAX_ASPECT_RATIO = 3.0  # longer side / shorter side
MIN_STD = 0.005  # standard deviation of the [0, 1] pixels below which the image is blank


@dataclass(frozen=True)
class ImageWords:
    """How a page names what it expects, in the messages (``check_image_shape``)."""

    kind: str  # "radiograph": "a 2-D radiograph is expected"
    typical: str  # "a chest radiograph is normally 1000 pixels or more"
    upload: str  # "image": "Upload the full-size image."
    square: str  # "a chest radiograph": "... is close to square"
    single: str  # "chest X-ray": "Upload a single, uncropped chest X-ray."


def check_image_shape(pixels: np.ndarray, words: ImageWords) -> None:
    if pixels.ndim != 2:
        raise UnsupportedInputError(f"The image has {pixels.ndim} dimensions; a 2-D {words.kind} is expected.")
    height, width = pixels.shape
    if min(height, width) < MIN_SIDE_PX:
        raise ImageTooSmallError(
            f"The image is only {width} x {height} pixels; at least {MIN_SIDE_PX} pixels on the shorter "
            f"side are needed ({words.typical}). Upload the full-size {words.upload}."
        )
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise UnsupportedInputError(
            f"The image is {width} x {height} pixels, {ratio:.1f} times longer than wide; {words.square} "
            f"is close to square (at most {MAX_ASPECT_RATIO:g}:1). Upload a single, uncropped {words.single}."
        )


def is_blank(pixels: np.ndarray) -> bool:
    return float(np.std(pixels)) < MIN_STD
