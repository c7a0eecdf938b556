"""The three orthogonal views of a CT volume as display pictures. No Streamlit here.

Volumes are in the canonical frame of ``core.io.volume`` (``[z, y, x]``: z feet -> head, y front ->
back, x patient's right -> left; ``spacing_mm = (dz, dy, dx)``). A view's slice comes out as a 2-D
array whose row 0 is the top of the screen, in the radiological convention:

=========  ==================  ============================  ==========================
view       slice              top of the picture            left of the picture
=========  ==================  ============================  ==========================
axial      ``a[k]``            anterior                      patient's right
coronal    ``a[::-1, j, :]``   head (z flipped)              patient's right
sagittal   ``a[::-1, :, i]``   head (z flipped)              anterior (patient faces left)
=========  ==================  ============================  ==========================

A slice index counts along the view's axis of the canonical array: axial from the feet up, coronal
from the front back, sagittal from the patient's right to left. The review log records these
indices (``core.reviews``).

Display pictures have square pixels, so the voxel spacing gives the true aspect ratio (a coronal view
of 2.5 mm slices is stretched along z), and at most ``DISPLAY_MAX_SIDE`` pixels per side: a
512 x 512 x 400 series is reduced (block mean, then linear interpolation) so every slider move sends
three small pictures to the browser. Only the shown slice is ever resampled or windowed, never the
whole volume. Masks are resampled by nearest neighbour and outlined at the display size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.imaging.windowing import Window, apply_window
from core.viz import CONSOLIDATION_COLOUR, GGO_COLOUR, LUNG_COLOUR, heat_tint, outline, tint, to_rgb

VIEWS = ("axial", "coronal", "sagittal")
VIEW_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # the canonical array axis a view's slider runs along
DISPLAY_MAX_SIDE = 256  # pixels; the longest side of a view shown on the page
CURSOR_COLOUR = (255, 255, 0)  # the lines marking where the other two views cut this one
ORIENTATION = {  # what lies at the (top, bottom, left, right) of each picture: the page's captions
    "axial": ("anterior", "posterior", "patient's right", "patient's left"),
    "coronal": ("head", "feet", "patient's right", "patient's left"),
    "sagittal": ("head", "feet", "anterior", "posterior"),
}


def _check_view(view: str) -> None:
    if view not in VIEW_AXIS:
        raise ValueError(f"Unknown view {view!r}; one of {', '.join(VIEWS)}.")


def slice_count(shape: tuple[int, ...], view: str) -> int:
    """How many slices ``view`` has in a volume of ``shape`` ([z, y, x])."""
    _check_view(view)
    return int(shape[VIEW_AXIS[view]])


def middle_slices(shape: tuple[int, ...]) -> dict[str, int]:
    """The middle slice of each view: where the page opens."""
    return {view: slice_count(shape, view) // 2 for view in VIEWS}


def view_slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """Slice ``index`` of ``view`` as a 2-D array in display orientation (see the module's table)."""
    _check_view(view)
    count = slice_count(volume.shape, view)
    if not 0 <= index < count:
        raise IndexError(f"{view} slice {index} is outside 0..{count - 1}.")
    if view == "axial":
        return volume[index]
    if view == "coronal":
        return volume[::-1, index, :]
    return volume[::-1, :, index]


def view_pixel_mm(spacing_mm: tuple[float, float, float], view: str) -> tuple[float, float]:
    """(row, column) pixel size in mm of a view's slice, from the volume's (dz, dy, dx)."""
    _check_view(view)
    dz, dy, dx = (float(s) for s in spacing_mm)
    return {"axial": (dy, dx), "coronal": (dz, dx), "sagittal": (dz, dy)}[view]


def display_shape(slice_shape: tuple[int, int], pixel_mm: tuple[float, float],
                  max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(rows, columns) of the display picture: square pixels, true proportions, longest side <= ``max_side``.

    The display pixel is the finer of the two voxel sizes (so nothing is lost by resampling) unless
    that makes the picture larger than ``max_side``; then it is as coarse as needed.
    """
    height_mm, width_mm = slice_shape[0] * pixel_mm[0], slice_shape[1] * pixel_mm[1]
    size_mm = max(min(pixel_mm), max(height_mm, width_mm) / max_side)
    return (max(1, min(max_side, round(height_mm / size_mm))), max(1, min(max_side, round(width_mm / size_mm))))


def resample(image: np.ndarray, shape: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """``image`` at ``shape`` (pixel centres aligned): nearest neighbour for labels, else block mean + linear."""
    out = np.asarray(image)
    for axis, size in enumerate(shape):
        out = _resample_axis(out, axis, size, nearest)
    return out


def _resample_axis(image: np.ndarray, axis: int, size: int, nearest: bool) -> np.ndarray:
    length = image.shape[axis]
    if length == size:
        return image
    if nearest:
        index = np.minimum(((np.arange(size) + 0.5) * length / size).astype(np.int64), length - 1)
        return np.take(image, index, axis=axis)
    image = image.astype(np.float32, copy=False)
    block = int(length // size)
    if block >= 2:  # average blocks first: two-tap interpolation alone would skip voxels (aliasing)
        kept = length - length % block
        trimmed = np.take(image, np.arange(kept), axis=axis)
        shape = (*image.shape[:axis], kept // block, block, *image.shape[axis + 1:])
        image, length = trimmed.reshape(shape).mean(axis=axis + 1), kept // block
    position = np.clip((np.arange(size) + 0.5) * length / size - 0.5, 0, length - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, length - 1)
    weight = (position - low).astype(np.float32)
    weight = weight.reshape([-1 if a == axis else 1 for a in range(image.ndim)])
    return np.take(image, low, axis=axis) * (1 - weight) + np.take(image, high, axis=axis) * weight


@dataclass(frozen=True)
class Overlays:
    """What to draw over the grey levels; every array is in the volume's canonical grid, None draws nothing.

    ``lungs``: bool mask, drawn as its outline. ``infection``: uint8 labels, 1 ground glass (amber),
    2 consolidation (red), as on the CT slice page. ``attention``: the classifier's T(A) in [0, 1],
    a heat tint whose strength follows the map (cold voxels stay grey).
    """

    lungs: np.ndarray | None = None
    infection: np.ndarray | None = None
    attention: np.ndarray | None = None
    opacity: float = 0.45


def cursor_lines(shape: tuple[int, ...], view: str, positions: Mapping[str, int]) -> tuple[list[int], list[int]]:
    """Rows and columns (of ``view_slice``'s picture) where the other views' current slices cut this view."""
    _check_view(view)
    depth = shape[0]
    rows, cols = [], []
    if view == "axial":
        rows += [positions["coronal"]] if "coronal" in positions else []
        cols += [positions["sagittal"]] if "sagittal" in positions else []
    else:
        rows += [depth - 1 - positions["axial"]] if "axial" in positions else []  # z is flipped for display
        other = "sagittal" if view == "coronal" else "coronal"
        cols += [positions[other]] if other in positions else []
    return rows, cols


def render_view(hu: np.ndarray, spacing_mm: tuple[float, float, float], view: str, index: int, window: Window,
                overlays: Overlays = Overlays(), *, cursor: Mapping[str, int] | None = None,
                max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """RGB uint8 picture of slice ``index`` of ``view``: windowed HU, overlays, optional cursor lines.

    ``cursor``: the slice index of the other views (e.g. ``{"axial": 40, "coronal": 96, "sagittal": 80}``)
    to draw where they cut this view.
    """
    grey_slice = view_slice(hu, view, index)
    shape = display_shape(grey_slice.shape, view_pixel_mm(spacing_mm, view), max_side)
    picture = to_rgb(apply_window(resample(grey_slice, shape), window))
    for name in ("lungs", "infection", "attention"):
        layer = getattr(overlays, name)
        if layer is not None and layer.shape != hu.shape:
            raise ValueError(f"The {name} overlay has shape {layer.shape}, the volume {hu.shape}.")
    if overlays.attention is not None:
        picture = heat_tint(picture, resample(view_slice(overlays.attention, view, index), shape), overlays.opacity)
    if overlays.lungs is not None:
        picture = outline(picture, resample(view_slice(overlays.lungs, view, index), shape, nearest=True), LUNG_COLOUR)
    if overlays.infection is not None:
        labels = resample(view_slice(overlays.infection, view, index), shape, nearest=True)
        for label, colour in ((1, GGO_COLOUR), (2, CONSOLIDATION_COLOUR)):
            picture = tint(picture, labels == label, overlays.opacity, colour)
    if cursor:
        picture = _draw_cursor(picture, grey_slice.shape, cursor_lines(hu.shape, view, cursor))
    return picture


def _draw_cursor(picture: np.ndarray, slice_shape: tuple[int, int], lines: tuple[list[int], list[int]]) -> np.ndarray:
    """Dotted lines (every other pixel) so the anatomy under them stays visible."""
    out = picture.copy()
    rows, cols = lines
    for position, axis in [(r, 0) for r in rows] + [(c, 1) for c in cols]:
        at = _display_position(position, slice_shape[axis], out.shape[axis])
        if axis == 0:
            out[at, ::2] = CURSOR_COLOUR
        else:
            out[::2, at] = CURSOR_COLOUR
    return out


def _display_position(index: int, length: int, size: int) -> int:
    """The display pixel holding the centre of source pixel ``index`` (``length`` source pixels -> ``size``)."""
    return min(size - 1, max(0, math.floor((index + 0.5) * size / length)))
