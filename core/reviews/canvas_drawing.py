"""Canvas drawing -> image coordinates: the drawing canvas's fabric.js JSON as regions in image pixels.

Usage (what the pages do with ``streamlit-drawable-canvas``'s ``json_data``)::

    shapes = shapes_from_fabric(canvas.json_data, canvas_shape=(512, 512), image_shape=study.pixels.shape)
    regions = tuple(shape.tagged(tag) for shape, tag in zip(shapes, tags))

The canvas shows the image stretched to ``canvas_shape`` (rows, columns), so a canvas point ``(u, v)``
is the image point ``(u * width / canvas_width, v * height / canvas_height)``; points are then clipped
to the image (``[0, width] x [0, height]``, see ``core.reviews.regions`` for the frame).

Objects read (fabric.js 5-7 ``toObject`` output, type names in any case):

- ``rect`` -> ``"rectangle"``: its 4 corners from ``left/top/width/height``.
- ``polygon`` -> ``"polygon"``: its ``points``.
- ``path`` (free drawing) -> ``"freehand"``: the ``path`` commands ``M L H V Q C Z`` (absolute),
  curves flattened to ``CURVE_STEPS`` segments each, closed into a polygon.

Each object's own transform is applied as fabric.js does it (``calcOwnMatrix``): the centre follows
from ``left/top``, ``originX/originY`` and the object's size including its stroke (``strokeWidth``,
``strokeUniform``); the points, less the object's ``pathOffset`` (the centre of their bounding box,
computed here with the curves' true extremes, as fabric.js does), are scaled (``scaleX/scaleY``,
``flipX/flipY``), rotated by ``angle`` (degrees) and moved to that centre. So a shape moved, scaled or
rotated with the canvas's edit tool is read where it is shown. The region is the geometry fabric.js
draws, i.e. the centre line of the outline (a rectangle dragged from x = 100 with a 2-pixel stroke
starts at x = 101). Skewed shapes are refused. Other object types (circles, lines, text) are refused:
the pages offer only the three tools above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.reviews.regions import MAX_POINTS, Region, invalid_regions

CURVE_STEPS = 4  # straight segments per Bezier curve of a free-drawn path
_ORIGINS = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}
_KINDS = {"rect": "rectangle", "polygon": "polygon", "path": "freehand"}


@dataclass(frozen=True)
class DrawnShape:
    """One shape of the canvas in image pixels, before the reviewer tags it."""

    kind: str  # one of core.reviews.regions.REGION_KINDS
    points: tuple[tuple[float, float], ...]

    def tagged(self, tag: str, slice_view: str | None = None, slice_index: int | None = None) -> Region:
        return Region(kind=self.kind, tag=tag, points=self.points, slice_view=slice_view, slice_index=slice_index)


def shapes_from_fabric(drawing: Mapping[str, Any] | None, *, canvas_shape: tuple[int, int],
                       image_shape: tuple[int, ...]) -> list[DrawnShape]:
    """The shapes of a fabric.js canvas JSON (``{"objects": [...]}``) in image pixels, in drawing order.

    ``canvas_shape`` / ``image_shape``: (rows, columns) of the canvas and of the image. ``None`` or no
    objects: ``[]``. Raises ``ReviewValidationError`` (field ``regions``) on what cannot be read.
    """
    if not drawing:
        return []
    objects = drawing.get("objects") or []
    if not isinstance(objects, list):
        raise invalid_regions("The drawing is not a list of shapes.")
    canvas_h, canvas_w = (float(n) for n in canvas_shape[:2])
    image_h, image_w = (float(n) for n in image_shape[:2])
    if min(canvas_h, canvas_w, image_h, image_w) <= 0:
        raise ValueError("canvas and image sizes must be positive")
    shapes = []
    for number, obj in enumerate(objects, start=1):
        kind, points = _canvas_points(number, obj)
        image_points = np.clip(points * [image_w / canvas_w, image_h / canvas_h], 0.0, [image_w, image_h])
        image_points = _at_most(image_points, MAX_POINTS)
        shapes.append(DrawnShape(kind, tuple((float(x), float(y)) for x, y in image_points)))
    return shapes


def _canvas_points(number: int, obj: Any) -> tuple[str, np.ndarray]:
    """(kind, canvas points [n, 2]) of one fabric.js object."""
    if not isinstance(obj, Mapping):
        raise invalid_regions(f"Shape {number} of the drawing cannot be read.")
    kind = _KINDS.get(str(obj.get("type", "")).lower())
    if kind is None:
        raise invalid_regions(
            f"Shape {number} is a {obj.get('type')!r}; draw rectangles, polygons or free outlines only.")
    if _number(obj, "skewX", 0.0) or _number(obj, "skewY", 0.0):
        raise invalid_regions(f"Shape {number} is skewed; undo the skew or draw it again.")
    width, height = _number(obj, "width", 0.0), _number(obj, "height", 0.0)
    if kind == "rectangle":
        local = np.array([[-width / 2, -height / 2], [width / 2, -height / 2],
                          [width / 2, height / 2], [-width / 2, height / 2]])
    elif kind == "polygon":
        local = _polygon_points(number, obj.get("points"))
        local = local - _box_centre(local)
    else:
        local, bounds = _path_points(number, obj.get("path"))
        local = local - _box_centre(bounds)
    return kind, _transform(obj, local, width, height)


def _number(obj: Mapping[str, Any], key: str, default: float) -> float:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid_regions(f"The drawing's {key} is not a number.")
    return float(value)


def _transform(obj: Mapping[str, Any], local: np.ndarray, width: float, height: float) -> np.ndarray:
    """Object-plane points (centred on the object) to canvas points: fabric.js's own matrix."""
    scale_x, scale_y = _number(obj, "scaleX", 1.0), _number(obj, "scaleY", 1.0)
    stroke = _number(obj, "strokeWidth", 1.0)
    if obj.get("strokeUniform"):
        size_x, size_y = width * scale_x + stroke, height * scale_y + stroke
    else:
        size_x, size_y = (width + stroke) * scale_x, (height + stroke) * scale_y
    angle = math.radians(_number(obj, "angle", 0.0))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    origin = np.array([_origin(obj.get("originX", "left")), _origin(obj.get("originY", "top"))])
    to_centre = rotation @ ((0.5 - origin) * [size_x, size_y])
    centre = np.array([_number(obj, "left", 0.0), _number(obj, "top", 0.0)]) + to_centre
    flips = np.array([-1.0 if obj.get("flipX") else 1.0, -1.0 if obj.get("flipY") else 1.0])
    return centre + (local * [scale_x, scale_y] * flips) @ rotation.T


def _origin(value: Any) -> float:
    if isinstance(value, str) and value in _ORIGINS:
        return _ORIGINS[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # fabric.js also takes 0..1
        return float(value)
    raise invalid_regions(f"The drawing's origin {value!r} is not understood.")


def _box_centre(points: np.ndarray) -> np.ndarray:
    return (points.min(axis=0) + points.max(axis=0)) / 2


def _polygon_points(number: int, points: Any) -> np.ndarray:
    if not isinstance(points, list) or not points:
        raise invalid_regions(f"Shape {number} (a polygon) has no points.")
    try:
        array = np.array([[float(p["x"]), float(p["y"])] for p in points])
    except (KeyError, TypeError, ValueError) as error:
        raise invalid_regions(f"Shape {number} (a polygon) has points that cannot be read.") from error
    if not np.isfinite(array).all():
        raise invalid_regions(f"Shape {number} (a polygon) has points that are not finite.")
    return array


def _path_points(number: int, path: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the path flattened to points, its exact extreme points) in the path's own coordinates."""
    if not isinstance(path, list) or not path:
        raise invalid_regions(f"Shape {number} (a free outline) has no path.")
    points: list[tuple[float, float]] = []
    extremes: list[tuple[float, float]] = []
    current = start = None
    for command in path:
        if not isinstance(command, list) or not command or not isinstance(command[0], str):
            raise invalid_regions(f"Shape {number} (a free outline) has a path that cannot be read.")
        letter, args = command[0], command[1:]
        try:
            values = [float(a) for a in args]
        except (TypeError, ValueError) as error:
            raise invalid_regions(f"Shape {number} (a free outline) has a path that cannot be read.") from error
        if letter in "Zz":
            current = start
            continue
        if letter == "H" and len(values) == 1 and current is not None:
            letter, values = "L", [values[0], current[1]]
        elif letter == "V" and len(values) == 1 and current is not None:
            letter, values = "L", [current[0], values[0]]
        expected = {"M": 2, "L": 2, "Q": 4, "C": 6}.get(letter)
        if expected is None or len(values) != expected or (letter != "M" and current is None):
            raise invalid_regions(f"Shape {number} (a free outline) uses path command {letter!r}, which is not read.")
        end = (values[-2], values[-1])
        if letter == "M":
            start = end
            new = [end]
        elif letter == "L":
            new = [end]
        else:
            controls = [current, *zip(values[0::2], values[1::2])]
            new = [_bezier(controls, t) for t in np.arange(1, CURVE_STEPS + 1) / CURVE_STEPS]
            extremes += [_bezier(controls, t) for t in _bezier_extreme_ts(controls)]
        points += new
        extremes += [end]
        current = end
    array = np.array(points, dtype=np.float64)
    if not np.isfinite(array).all():
        raise invalid_regions(f"Shape {number} (a free outline) has points that are not finite.")
    if len(array) > 1 and np.array_equal(array[0], array[-1]):  # closed by hand: the polygon closes itself
        array = array[:-1]
    return array, np.array(extremes, dtype=np.float64)


def _bezier(controls: Sequence[tuple[float, float]], t: float) -> tuple[float, float]:
    """A point of the quadratic (3 controls) or cubic (4) Bezier curve at ``t`` (de Casteljau)."""
    points = np.array(controls, dtype=np.float64)
    while len(points) > 1:
        points = (1 - t) * points[:-1] + t * points[1:]
    return float(points[0, 0]), float(points[0, 1])


def _bezier_extreme_ts(controls: Sequence[tuple[float, float]]) -> list[float]:
    """The curve parameters in (0, 1) where x or y is extreme (derivative zero): the bounding box's edges."""
    points = np.array(controls, dtype=np.float64)
    found = []
    for axis in (0, 1):
        p = points[:, axis]
        if len(p) == 3:  # B'(t) = 0 at t = (p0 - p1) / (p0 - 2 p1 + p2)
            denominator = p[0] - 2 * p[1] + p[2]
            roots = [(p[0] - p[1]) / denominator] if denominator else []
        else:  # cubic: B'(t) / 3 = a t^2 + b t + c
            a = -p[0] + 3 * p[1] - 3 * p[2] + p[3]
            b = 2 * (p[0] - 2 * p[1] + p[2])
            c = p[1] - p[0]
            roots = [r.real for r in np.roots([a, b, c]) if abs(r.imag) < 1e-12] if (a or b) else []
        found += [float(t) for t in roots if 0 < t < 1]
    return found


def _at_most(points: np.ndarray, limit: int) -> np.ndarray:
    """``points`` simplified (Douglas-Peucker, growing tolerance) until at most ``limit`` remain."""
    if len(points) <= limit:
        return points
    from skimage.measure import approximate_polygon

    tolerance = 0.25
    closed = np.vstack([points, points[:1]])
    while True:
        simplified = approximate_polygon(closed, tolerance)[:-1]
        if len(simplified) <= limit:
            return simplified
        tolerance *= 2
