"""Model-input preparation shared by serving and training, so the two can never differ.

Pixels enter as float32 in [0, 1] (``core.io`` guarantees it). Images are resized to a square
without keeping the aspect ratio: the segmenter and classifier were trained that way, and the
lung mask is resized back to the original shape afterwards.
"""

from __future__ import annotations

import numpy as np
from skimage import exposure
from skimage.transform import resize

from .imaging.resample import resize as bilinear
from .imaging.resample import resize_antialiased as bilinear_antialiased


def resize_square(pixels: np.ndarray, size: int, order: int = 1) -> np.ndarray:
    """Resize a 2-D array to ``size x size`` (bilinear for images, ``order=0`` for masks); anti-aliased when shrinking.

    scikit-image's ``resize(pixels, (size, size), order=order, preserve_range=True, anti_aliasing=...)``: bilinear
    resizing is ``core.imaging.resample``'s faster equivalent, with or without the anti-aliasing Gaussian.
    """
    anti_aliasing = order > 0 and min(pixels.shape) > size
    if order == 1:
        resized = bilinear_antialiased(pixels, (size, size)) if anti_aliasing else bilinear(pixels, (size, size))
        return resized.astype(np.float32)
    return resize(pixels, (size, size), order=order, preserve_range=True, anti_aliasing=anti_aliasing).astype(np.float32)


def min_max(pixels: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (MANet stage 1); a constant image becomes all zeros."""
    low, high = float(pixels.min()), float(pixels.max())
    if high - low < 1e-8:
        return np.zeros_like(pixels, dtype=np.float32)
    return ((pixels - low) / (high - low)).astype(np.float32)


def segmenter_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """(1, size, size) float32 in [0, 1]."""
    return min_max(resize_square(pixels, size))[None]


def classifier_input(pixels: np.ndarray, lung_mask: np.ndarray, size: int, equalise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Segmented image in [-1, 1] (MANet stage 2) and the lung mask in {0, 1}, both (1, size, size).

    Outside the lungs the image is -1 (black), as after the paper's segmentation step. ``equalise``: the
    lung pixels' histogram is equalised instead of min-max scaled, so the contrast and gamma that each
    source's processing gives its films stop telling the sources (and so the classes) apart.
    """
    mask = (resize_square(lung_mask.astype(np.float32), size, order=1) >= 0.5).astype(np.float32)
    resized = resize_square(pixels, size)
    if equalise and mask.any():
        scaled = exposure.equalize_hist(resized, nbins=256, mask=mask > 0).astype(np.float32)
    else:
        scaled = min_max(resized)
    image = np.where(mask > 0, scaled * 2.0 - 1.0, -1.0).astype(np.float32)
    return image[None], mask[None]


def masked_classifier_input(pixels: np.ndarray, lung_mask: np.ndarray, size: int,
                            input_config: dict) -> tuple[tuple[np.ndarray, np.ndarray], tuple | None]:
    """MANet's (image, mask) inputs as a model card's ``input_config`` asks, and the box of the image they cover.

    ``lung_crop`` (a margin, fraction of the image side): the inputs cover only the lungs' bounding box, so the
    lungs fill the input whatever their size on the film (children and adults, tight and wide collimation).
    ``equalise``: see ``classifier_input``. Without either key: the paper's whole-image input (box None).
    """
    box = None
    if input_config.get("lung_crop") is not None:
        box = lung_roi_box(mask_to_shape(lung_mask, pixels.shape), float(input_config["lung_crop"]))
    if box is not None:
        pixels, lung_mask = pixels[box], mask_to_shape(lung_mask, pixels.shape)[box]
    return classifier_input(pixels, lung_mask, size, bool(input_config.get("equalise", False))), box


def mask_to_shape(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized (nearest neighbour) to ``shape``."""
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    return resize(mask.astype(np.float32), shape, order=0, preserve_range=True, anti_aliasing=False) > 0.5


def lung_only_input(pixels: np.ndarray, lung_mask: np.ndarray, size: int) -> np.ndarray:
    """UNet + HRNet input (1, size, size): the image in [0, 1] inside the (dilated, closed) lung mask, 0 outside."""
    return resize_square(np.where(mask_to_shape(lung_mask, pixels.shape), min_max(pixels), 0.0), size)[None]


def lung_roi_box(lung_mask: np.ndarray, margin: float = 0.05) -> tuple[slice, slice] | None:
    """Bounding box of the lungs grown by ``margin`` of the image side (COVID-CXNet's ROI); None if no lungs."""
    rows, cols = np.flatnonzero(lung_mask.any(1)), np.flatnonzero(lung_mask.any(0))
    if rows.size == 0:
        return None
    pad_r, pad_c = int(margin * lung_mask.shape[0]), int(margin * lung_mask.shape[1])
    return (slice(max(rows[0] - pad_r, 0), min(rows[-1] + 1 + pad_r, lung_mask.shape[0])),
            slice(max(cols[0] - pad_c, 0), min(cols[-1] + 1 + pad_c, lung_mask.shape[1])))


def cxnet_input(pixels: np.ndarray, lung_mask: np.ndarray | None, size: int, reference: np.ndarray | None = None) -> np.ndarray:
    """COVID-CXNet input (3, size, size) in [0, 1]: original, CLAHE, BEASF of the lung ROI.

    ``lung_mask`` (already dilated, any resolution) crops the image to the lungs plus a margin; None
    keeps the whole image (the paper's model without segmentation). ``reference`` (size x size) histogram-matches the
    image first, as the paper does for its multi-class set.
    """
    from .enhance import cxnet_channels, match_histogram

    box = lung_roi_box(mask_to_shape(lung_mask, pixels.shape)) if lung_mask is not None else None
    image = np.clip(resize_square(pixels[box] if box else pixels, size), 0.0, 1.0)
    if reference is not None:
        image = match_histogram(image, reference)
    return cxnet_channels(image)
