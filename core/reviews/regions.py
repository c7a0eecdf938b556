"""Regions a reviewer draws on a case: where the model missed something, saw something, or pointed wrongly.

Usage::

    from core.reviews.regions import Region, regions_mask, regions_to_json, regions_from_json

    box = Region(kind="rectangle", tag="missed finding", points=((10, 20), (60, 20), (60, 80), (10, 80)))
    store.add_review(ReviewInput(..., regions=(box,)))      # stored with the review, in one transaction
    mask = regions_mask(review.regions, study.pixels.shape) # uint8, one value per tag (TAG_VALUES)
    regions_to_json(review.regions)                         # the CSV's ``regions`` column

Coordinates are the image's own pixels, whatever size the page showed it at: ``(x, y)`` with x the
column and y the row, measured from the top-left corner of the image, so pixel ``(row i, column j)``
covers ``[j, j + 1) x [i, i + 1)`` and its centre is ``(j + 0.5, i + 0.5)``; the image spans
``[0, width] x [0, height]``. Values are floats rounded to 1/100 pixel.

A region of a CT volume also names the slice it was drawn on: ``slice_view`` (``"axial"``,
``"coronal"``, ``"sagittal"``) and ``slice_index`` (0-based, canonical frame), and its points are in
that slice as ``core.imaging.volume_views.view_slice`` returns it (display orientation, one pixel per
voxel; not the resampled display picture). Regions of the other pages carry no slice.

``kind``: ``"rectangle"`` (its 4 corners, clockwise from the top-left one when not rotated),
``"polygon"`` (the clicked vertices) or ``"freehand"`` (a drawn path, flattened to points); every
kind is a closed polygon through its points. ``tag``: one of ``REGION_TAGS``.

The CSV column (``regions_to_json``) is a JSON array, one object per region in drawing order, keys in
this order: ``{"kind": ..., "tag": ..., "points": [[x, y], ...], "slice_view": ... | null,
"slice_index": ... | null}``; ``[]`` when the review has none.

Validation errors are ``core.reviews.ReviewValidationError`` with ``field == "regions"``.
"""

from __future__ import annotations

import io
import json
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

REGION_KINDS = ("rectangle", "polygon", "freehand")
REGION_TAGS = ("missed finding", "false finding", "wrong location", "other")
TAG_VALUES = {tag: value for value, tag in enumerate(REGION_TAGS, start=1)}  # label-mask value of each tag
TAG_COLOURS = {  # outline colours (RGB), apart from the lung (cyan), infection (amber, red) and box overlays
    "missed finding": (255, 64, 160),
    "false finding": (255, 140, 0),
    "wrong location": (160, 90, 255),
    "other": (250, 250, 250),
}
REGION_SLICE_VIEWS = ("axial", "coronal", "sagittal")  # as core.reviews.schema.SLICE_VIEWS
MAX_REGIONS = 50  # per review
MAX_POINTS = 2000  # per region; freehand paths longer than that are simplified by the canvas reader
MIN_POINTS = {"rectangle": 4, "polygon": 3, "freehand": 3}
COORDINATE_MAX = 100_000.0  # pixels; far beyond any chest image, a larger value is a bug upstream
SLICE_INDEX_MAX = 99_999
POINT_DECIMALS = 2
KIND_MAX = 16  # column sizes of review_regions
TAG_MAX = 32


def invalid_regions(message: str) -> Exception:
    """The ``ReviewValidationError`` (field ``regions``) to raise for ``message``."""
    # store.py imports this module, so its error class is looked up when needed, not at import time.
    from core.reviews.store import ReviewValidationError

    return ReviewValidationError("regions", message)


@dataclass(frozen=True)
class Region:
    """One drawn region in image pixels (see the module docstring for the coordinate frame)."""

    kind: str
    tag: str
    points: tuple[tuple[float, float], ...]
    slice_view: str | None = None
    slice_index: int | None = None

    def validated(self, number: int = 1) -> Region:
        """A normalised copy (points rounded to 1/100 pixel, tuples); ``number`` names it in messages."""
        name = f"Region {number}"
        kind = self.kind.strip().lower() if isinstance(self.kind, str) else None
        if kind not in REGION_KINDS:
            raise invalid_regions(f"{name}: the shape must be one of {', '.join(REGION_KINDS)}.")
        tag = self.tag.strip().lower() if isinstance(self.tag, str) else None
        if tag not in REGION_TAGS:
            raise invalid_regions(f"{name}: choose its tag, one of {', '.join(REGION_TAGS)}.")
        points = _points(name, kind, self.points)
        view, index = _slice(name, self.slice_view, self.slice_index)
        return Region(kind=kind, tag=tag, points=points, slice_view=view, slice_index=index)

    def to_dict(self) -> dict[str, Any]:
        """The region as plain JSON values, keys in the documented order."""
        return {"kind": self.kind, "tag": self.tag, "points": [[float(x), float(y)] for x, y in self.points],
                "slice_view": self.slice_view, "slice_index": self.slice_index}

    @classmethod
    def from_dict(cls, value: Any) -> Region:
        if not isinstance(value, dict):
            raise invalid_regions("A region must be an object with kind, tag and points.")
        points = value.get("points")
        if not isinstance(points, list):
            raise invalid_regions("A region's points must be a list of [x, y] pairs.")
        return cls(kind=value.get("kind"), tag=value.get("tag"),
                   points=tuple(tuple(point) if isinstance(point, list) else point for point in points),
                   slice_view=value.get("slice_view"), slice_index=value.get("slice_index"))


def _points(name: str, kind: str, points: Any) -> tuple[tuple[float, float], ...]:
    if isinstance(points, (str, bytes)) or not isinstance(points, Iterable):
        raise invalid_regions(f"{name}: its points must be a sequence of (x, y) pairs.")
    result = []
    for point in points:
        if isinstance(point, (str, bytes)) or not isinstance(point, (Sequence, np.ndarray)) or len(point) != 2:
            raise invalid_regions(f"{name}: every point must be an (x, y) pair.")
        pair = []
        for value in point:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise invalid_regions(f"{name}: every coordinate must be a finite number.")
            value = round(float(value), POINT_DECIMALS) + 0.0  # + 0.0: no "-0.0" in the JSON
            if not 0.0 <= value <= COORDINATE_MAX:
                raise invalid_regions(f"{name}: coordinates must lie between 0 and {COORDINATE_MAX:g} pixels.")
            pair.append(value)
        result.append((pair[0], pair[1]))
        if len(result) > MAX_POINTS:
            raise invalid_regions(f"{name} has more than {MAX_POINTS} points; draw it with fewer.")
    if len(result) < MIN_POINTS[kind]:
        raise invalid_regions(f"{name}: a {kind} needs at least {MIN_POINTS[kind]} points.")
    if kind == "rectangle" and len(result) != 4:
        raise invalid_regions(f"{name}: a rectangle is given by its 4 corners.")
    return tuple(result)


def _slice(name: str, view: Any, index: Any) -> tuple[str | None, int | None]:
    if isinstance(view, str):
        view = view.strip().lower() or None
    if view is None and index is None:
        return None, None
    if view not in REGION_SLICE_VIEWS:
        raise invalid_regions(f"{name}: the slice's view must be one of {', '.join(REGION_SLICE_VIEWS)}.")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= int(index) <= SLICE_INDEX_MAX:
        raise invalid_regions(f"{name}: the slice number must be a whole number from 0 to {SLICE_INDEX_MAX}.")
    return view, int(index)


def validate_regions(regions: Any, *, needs_slice: bool) -> tuple[Region, ...]:
    """The review's regions, validated and normalised.

    ``needs_slice``: True for a CT volume, whose every region must name its slice; False elsewhere,
    where none may.
    """
    if regions is None:
        return ()
    if isinstance(regions, (str, bytes, Region)) or not isinstance(regions, Iterable):
        raise invalid_regions("Regions must be a sequence of Region objects.")
    regions = tuple(regions)
    if len(regions) > MAX_REGIONS:
        raise invalid_regions(f"A review holds at most {MAX_REGIONS} regions; this one has {len(regions)}.")
    result = []
    for number, region in enumerate(regions, start=1):
        if not isinstance(region, Region):
            raise invalid_regions(f"Region {number} is not a Region.")
        region = region.validated(number)
        if needs_slice and region.slice_view is None:
            raise invalid_regions(f"Region {number}: a region on a CT volume must name the slice it was drawn on.")
        if not needs_slice and region.slice_view is not None:
            raise invalid_regions(f"Region {number}: only regions drawn on a CT volume name a slice.")
        result.append(region)
    return tuple(result)


def regions_to_json(regions: Iterable[Region]) -> str:
    """The documented JSON array of the regions (the CSV's ``regions`` column); ``[]`` for none."""
    return json.dumps([region.to_dict() for region in regions], separators=(",", ":"), ensure_ascii=True)


def regions_from_json(text: str) -> tuple[Region, ...]:
    """Regions back from ``regions_to_json`` (validated, no slice rule applied)."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError) as error:
        raise invalid_regions("The regions are not valid JSON.") from error
    if not isinstance(values, list):
        raise invalid_regions("The regions must be a JSON array.")
    return tuple(Region.from_dict(value).validated(number) for number, value in enumerate(values, start=1))


def regions_on_slice(regions: Iterable[Region], slice_view: str | None, slice_index: int | None) -> tuple[Region, ...]:
    """The regions drawn on one slice of a volume (``None, None``: the regions of a 2-D image)."""
    return tuple(r for r in regions if (r.slice_view, r.slice_index) == (slice_view, slice_index))


def regions_mask(regions: Iterable[Region], shape: tuple[int, ...], *, binary: bool = False) -> np.ndarray:
    """A uint8 mask of ``shape`` (rows, columns): 0 outside every region, else the region's tag value.

    Tag values are ``TAG_VALUES`` (missed finding 1, false finding 2, wrong location 3, other 4);
    where regions overlap, the later one wins. ``binary``: 1 inside any region instead. A pixel is
    inside when its centre is inside the region's polygon or on its edge (``skimage.draw.polygon``). The caller picks
    the regions of one image (for a volume: ``regions_on_slice``).
    """
    from skimage.draw import polygon

    rows, columns = int(shape[0]), int(shape[1])
    mask = np.zeros((rows, columns), dtype=np.uint8)
    for region in regions:
        xs = np.array([x for x, _ in region.points], dtype=np.float64) - 0.5  # pixel centres at integers
        ys = np.array([y for _, y in region.points], dtype=np.float64) - 0.5
        rr, cc = polygon(ys, xs, shape=(rows, columns))
        mask[rr, cc] = 1 if binary else TAG_VALUES[region.tag]
    return mask


def regions_by_tag(regions: Iterable[Region], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """One boolean mask (``shape``) per tag that has regions: the reviewer's regions as DICOM SEG segments
    (``core.dicom_seg``), each tag whole even where regions of two tags overlap."""
    regions = tuple(regions)
    return {tag: regions_mask([r for r in regions if r.tag == tag], shape, binary=True) > 0
            for tag in REGION_TAGS if any(r.tag == tag for r in regions)}


def regions_in_volume(regions: Iterable[Region], volume_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A CT volume review's regions, each drawn on one slice of one view, as one boolean (z, y, x) mask per tag in the
    canonical volume frame (``core.imaging.volume_views``): the DICOM SEG of a series takes them so."""
    from core.imaging.volume_views import view_slice

    masks: dict[str, np.ndarray] = {}
    for region in regions:
        if region.slice_view is None:
            continue
        mask = masks.setdefault(region.tag, np.zeros(volume_shape, dtype=bool))
        plane = view_slice(mask, region.slice_view, region.slice_index)  # a view into ``mask``: writing fills it
        plane |= regions_mask([region], plane.shape, binary=True) > 0
    return {tag: masks[tag] for tag in REGION_TAGS if tag in masks}


def mask_png(mask: np.ndarray) -> bytes:
    """The mask as an 8-bit greyscale PNG holding the label values themselves (0-4, or 0-1)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def outline_regions(picture: np.ndarray, regions: Iterable[Region], image_shape: tuple[int, ...],
                    width: int = 2) -> np.ndarray:
    """RGB uint8 copy of ``picture`` with each region's outline in its tag's colour.

    ``picture`` may be the image at another size (a display picture): points are scaled from
    ``image_shape`` (rows, columns) to the picture's size. Grey [0, 1] pictures are turned to RGB.
    """
    from PIL import Image, ImageDraw

    array = np.asarray(picture)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    image = Image.fromarray(array[..., :3].copy())
    scale_x, scale_y = array.shape[1] / image_shape[1], array.shape[0] / image_shape[0]
    draw = ImageDraw.Draw(image)
    for region in regions:
        points = [(x * scale_x, y * scale_y) for x, y in region.points]
        draw.line([*points, points[0]], fill=TAG_COLOURS[region.tag], width=width, joint="curve")
    return np.asarray(image)
