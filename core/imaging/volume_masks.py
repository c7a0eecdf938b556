"""3D clean-up of masks predicted slice by slice, and the volumes read off them.

Arrays are in the canonical volume frame ``[z, y, x]`` (``core.io.volume``): x runs from the
patient's right to the patient's left, so the RIGHT lung is the half with the SMALL x index.

A 2D network sees one axial slice at a time; its masks are stacked and cleaned in 3D:

* lungs: holes filled in each axial slice, the largest 3D component kept, and the largest one on the
  other side of the body's midline when the largest holds one lung only (two lungs touching at the
  anterior junction line form one component that spans both sides: it is kept alone); holes enclosed
  in 3D filled last. Everything else (stomach or bowel gas, a speck outside the chest) is dropped.
* infection: kept inside the lungs.

Every step runs on the bounding box of the mask (plus one voxel), so a 512 x 512 x 300 volume costs
what its lungs cost.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 6-neighbourhood in 3D: two lungs that touch only along an edge or a corner stay two components
FACE_NEIGHBOURS_3D = ndimage.generate_binary_structure(3, 1)
# 4-neighbourhood inside one axial slice, none across slices: labels each slice on its own in one call
FACE_NEIGHBOURS_IN_SLICE = np.zeros((3, 3, 3), dtype=bool)
FACE_NEIGHBOURS_IN_SLICE[1] = ndimage.generate_binary_structure(2, 1)
# a component counts as "both lungs" when each side of the midline holds at least this share of it
SPANS_BOTH_SIDES_FRACTION = 0.15
# the other lung is kept when it is at least this share of the largest component (a collapsed lung is small)
MIN_SECOND_LUNG_FRACTION = 0.02
# where two touching lungs are cut: the emptiest column within this share of the width around the midline
JUNCTION_SEARCH_FRACTION = 0.12


def bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """The smallest box holding ``mask``, grown by ``margin`` voxels inside the array; None when empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        if present.size == 0:
            return None
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _enclosed_background(mask: np.ndarray, structure: np.ndarray, open_axes: tuple[int, ...]) -> np.ndarray:
    """Background voxels not connected (through ``structure``) to a face of the array along ``open_axes``."""
    labels, count = ndimage.label(~mask, structure=structure)
    if count == 0:
        return np.zeros_like(mask)
    outside = np.zeros(count + 1, dtype=bool)
    for axis in open_axes:
        for end in (0, -1):
            outside[np.unique(np.take(labels, end, axis=axis))] = True
    outside[0] = True  # label 0 is the mask itself
    return ~outside[labels]


def _fill(mask: np.ndarray, structure: np.ndarray, open_axes: tuple[int, ...]) -> np.ndarray:
    mask = mask.astype(bool, copy=True)
    box = bounding_box(mask)
    if box is None:
        return mask
    # a hole lies strictly inside the box; background reaching the box's faces reaches the outside
    crop = mask[box]
    crop |= _enclosed_background(crop, structure, open_axes)
    return mask


def fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice ``mask[k]`` (as ``scipy.ndimage.binary_fill_holes`` would, slice by slice)."""
    return _fill(mask, FACE_NEIGHBOURS_IN_SLICE, open_axes=(1, 2))


def fill_holes_3d(mask: np.ndarray) -> np.ndarray:
    """Fill cavities enclosed in 3D (background not 6-connected to the outside)."""
    return _fill(mask, FACE_NEIGHBOURS_3D, open_axes=(0, 1, 2))


def default_midline(shape: tuple[int, ...]) -> float:
    """The image's centre column: scanners centre the patient in the field of view."""
    return (shape[-1] - 1) / 2.0


def body_midline(hu: np.ndarray, body_hu: float = -500.0, step: int = 4) -> float:
    """x of the body's centre (voxels above ``body_hu``, every ``step``-th voxel in z and y)."""
    profile = np.count_nonzero(hu[::step, ::step, :] > body_hu, axis=(0, 1)).astype(np.float64)
    if profile.sum() == 0:
        return default_midline(hu.shape)
    return float((profile * np.arange(hu.shape[-1])).sum() / profile.sum())


def _junction_columns(component: np.ndarray, midline: float) -> np.ndarray:
    """Per axial slice, the x where two touching lungs are cut: the column with the fewest voxels near the midline.

    The lungs meet along the thin anterior (and sometimes posterior) junction line, so the column
    through the junction holds few lung voxels; ties go to the column nearest the midline.
    """
    width = component.shape[-1]
    reach = max(round(JUNCTION_SEARCH_FRACTION * width), 1)
    centre = round(float(midline))
    low, high = max(centre - reach, 0), min(centre + reach + 1, width)
    profile = component[:, :, low:high].sum(axis=1).astype(np.float64)  # (z, columns)
    distance = np.abs(np.arange(low, high) - midline)
    # lexicographic: fewest voxels first, then nearest the midline
    order = profile * (2.0 * width) + distance[None, :]
    return low + order.argmin(axis=1)


def _cut_at_junction(component: np.ndarray, midline: float) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) halves of one component, cut per axial slice at its junction column."""
    columns = _junction_columns(component, midline)
    right_side = np.arange(component.shape[-1])[None, None, :] < columns[:, None, None]
    return component & right_side, component & ~right_side


def _components(mask: np.ndarray) -> tuple[np.ndarray, list]:
    """(labels, bounding box of each label from 1)."""
    labels, _ = ndimage.label(mask, structure=FACE_NEIGHBOURS_3D)
    return labels, ndimage.find_objects(labels)


def _sizes_of_large(labels: np.ndarray, boxes: list, fraction: float) -> dict[int, int]:
    """Voxel counts of every component holding at least ``fraction`` of the largest one (label -> size).

    Counting all labels (``bincount``) costs a pass over the whole array in 64-bit integers; counting
    inside bounding boxes, largest box first, stops as soon as no box left can hold enough voxels.
    """
    volumes = [int(np.prod([s.stop - s.start for s in box])) for box in boxes]
    sizes: dict[int, int] = {}
    for position in np.argsort(volumes)[::-1]:
        if sizes and volumes[position] < fraction * max(sizes.values()):
            break
        index = int(position) + 1
        sizes[index] = int(np.count_nonzero(labels[boxes[position]] == index))
    return sizes


def _component_in_box(labels: np.ndarray, index: int, boxes: list) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The component ``index`` cropped to its own bounding box, and that box."""
    box = boxes[index - 1]
    return labels[box] == index, box


def _x_centroid(component: np.ndarray, box: tuple[slice, ...]) -> float:
    profile = np.count_nonzero(component, axis=(0, 1)).astype(np.float64)
    return box[2].start + float((profile * np.arange(profile.size)).sum() / profile.sum())


def _spans_both_sides(component: np.ndarray, midline: float) -> bool:
    if not 0 < midline < component.shape[-1] - 1:
        return False  # the component lies on one side
    right, left = _cut_at_junction(component, midline)
    total = max(int(component.sum()), 1)
    return min(int(right.sum()), int(left.sum())) >= SPANS_BOTH_SIDES_FRACTION * total


def keep_lungs(mask: np.ndarray, midline: float | None = None) -> np.ndarray:
    """The largest 3D component, plus the largest one on the other side of the midline unless it spans both."""
    mask = mask.astype(bool)
    box = bounding_box(mask, margin=0)
    out = np.zeros_like(mask)
    if box is None:
        return out
    midline = (default_midline(mask.shape) if midline is None else midline) - box[2].start
    labels, boxes = _components(mask[box])
    sizes = _sizes_of_large(labels, boxes, MIN_SECOND_LUNG_FRACTION)
    largest = max(sizes, key=sizes.get)
    keep = [largest]
    component, own_box = _component_in_box(labels, largest, boxes)
    if not _spans_both_sides(component, midline - own_box[2].start):
        largest_is_right = _x_centroid(component, own_box) < midline
        for index in sorted(sizes, key=sizes.get, reverse=True)[1:]:
            if sizes[index] < MIN_SECOND_LUNG_FRACTION * sizes[largest]:
                break  # sorted by size: nothing large enough is left
            if (_x_centroid(*_component_in_box(labels, index, boxes)) < midline) != largest_is_right:
                keep.append(index)
                break
    out[box] = labels == keep[0] if len(keep) == 1 else (labels == keep[0]) | (labels == keep[1])
    return out


def clean_lung_mask(raw: np.ndarray, midline: float | None = None) -> np.ndarray:
    """Slice-wise lung masks -> one 3D lung mask: holes filled per slice, the lungs kept, 3D cavities filled."""
    return fill_holes_3d(keep_lungs(fill_holes_slicewise(raw), midline))


def split_lungs(lung_mask: np.ndarray, midline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) lungs, the patient's sides (right = small x).

    Separate components go to the side of their centroid; a component spanning both sides (lungs
    touching at a junction line) is cut slice by slice at its emptiest column near the midline.
    ``midline`` (an x index; the pipeline passes the body's, ``body_midline``) defaults to the image's centre column.
    """
    mask = lung_mask.astype(bool)
    right, left = np.zeros_like(mask), np.zeros_like(mask)
    box = bounding_box(mask, margin=0)
    if box is None:
        return right, left
    midline = (default_midline(mask.shape) if midline is None else midline) - box[2].start
    labels, boxes = _components(mask[box])
    for index in range(1, len(boxes) + 1):
        component, own_box = _component_in_box(labels, index, boxes)
        # views into ``right`` and ``left``: writing them writes the outputs
        right_crop, left_crop = right[box][own_box], left[box][own_box]
        own_midline = midline - own_box[2].start
        if _spans_both_sides(component, own_midline):
            part_right, part_left = _cut_at_junction(component, own_midline)
            right_crop |= part_right
            left_crop |= part_left
        elif _x_centroid(component, own_box) < midline:
            right_crop |= component
        else:
            left_crop |= component
    return right, left


def voxel_volume_ml(spacing_mm: tuple[float, float, float]) -> float:
    dz, dy, dx = spacing_mm
    return float(dz) * float(dy) * float(dx) / 1000.0


def volume_ml(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """Millilitres of a mask: voxels x dz dy dx / 1000."""
    return int(np.count_nonzero(mask)) * voxel_volume_ml(spacing_mm)


def keep_inside(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``labels`` with everything outside ``mask`` set to 0."""
    return np.where(mask, labels, 0).astype(labels.dtype)
