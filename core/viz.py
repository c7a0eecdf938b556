"""Pictures of a result: overlays as RGB arrays and plotly figures. No Streamlit here."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps

from .classes import class_title
from .postprocess import padded_bounding_box

LUNG_COLOUR = (0, 200, 255)
GGO_COLOUR = (255, 200, 0)  # ground-glass opacity: amber
CONSOLIDATION_COLOUR = (230, 30, 60)  # consolidation: red
HEATMAP_BOX_COLOUR = (255, 255, 255)
SIDE_BOX_COLOURS = {"right": (0, 255, 120), "left": (255, 0, 255)}  # the patient's right (image left) and left


def to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(to_grey_levels(gray)[..., None], 3, axis=2)


def heat_overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map over the image; ``opacity`` 0 shows the image alone.

    Each output pixel depends only on the image's 8-bit grey level and the colour map's entry, so a
    (256 x entries) table of blended colours, computed with the very arithmetic of the plain blend
    (float32 image, float64 colours), gives the same bytes as blending a megapixel image, in a tenth of the time.
    """
    table = _heat_blend_table(float(opacity), cmap)
    entries = table.shape[1]
    flat = np.multiply(to_grey_levels(gray), entries, dtype=np.int32 if 256 * entries < 1 << 31 else np.intp, order="C")
    flat += _colour_index(heat, colormaps[cmap])
    return table.reshape(-1, 3).take(flat, axis=0)


def to_grey_levels(gray: np.ndarray) -> np.ndarray:
    """The 8-bit grey level ``to_rgb`` shows for each pixel."""
    return (np.clip(gray, 0, 1) * 255).astype(np.uint8)


def _colour_index(values: np.ndarray, colormap) -> np.ndarray:
    """Matplotlib's own float -> look-up-table index (``Colormap.__call__``): ``int(x * N)``, 1.0 -> N - 1, NaN -> bad.

    ``clip(x * N, 0, N - 1)`` truncated is ``clip(x, 0, 1) * N`` truncated with N taken to N - 1 (NaN stays NaN):
    worked out in place on one float array, then cast once to a C-ordered index, as narrow as the table allows.
    """
    n = colormap.N
    values = np.asarray(values)
    if values.dtype.kind != "f":  # integers or booleans: the same indices from floats, without overflow
        values = values.astype(np.float64)
    with np.errstate(over="ignore"):  # a huge value's product is infinite, and capped like it
        scaled = np.multiply(values, n)
    np.clip(scaled, 0, n - 1, out=scaled)
    np.copyto(scaled, n + 2, where=np.isnan(scaled))  # matplotlib's "bad" entry
    return scaled.astype(np.uint16 if n + 3 <= 1 << 16 else np.intp, order="C")


@lru_cache(maxsize=8)
def _heat_blend_table(opacity: float, cmap: str) -> np.ndarray:
    """uint8 (256, N + 3, 3): grey level x colour-map entry -> the blended colour, as the plain blend computes it."""
    colormap = colormaps[cmap]
    colormap(0.0)  # builds the look-up table
    base = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    colours = colormap._lut[:, :3]
    table = np.clip((1 - opacity) * base[:, None, None] + opacity * colours[None], 0, 1) * 255
    table = table.astype(np.uint8)
    table.flags.writeable = False
    return table


def mask_overlay(gray: np.ndarray, mask: np.ndarray, opacity: float = 0.35, colour=LUNG_COLOUR) -> np.ndarray:
    """Tint the mask and draw its outline at full strength so the edge stays visible at low opacity."""
    return _grey_tints(gray, [(np.asarray(mask, dtype=bool), colour)], opacity)


def infection_overlay(gray: np.ndarray, labels: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Ground glass (label 1) and consolidation (label 2) in two colours, each with its outline."""
    return _grey_tints(gray, [(labels == 1, GGO_COLOUR), (labels == 2, CONSOLIDATION_COLOUR)], opacity)


def tint(rgb: np.ndarray, mask: np.ndarray, opacity: float, colour) -> np.ndarray:
    """Tint ``mask`` on an RGB image, its outline at full strength: the overlays above, on an image already in colour."""
    return _tint(rgb, np.asarray(mask, dtype=bool), opacity, colour)


def outline(rgb: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    """Only the outline of ``mask``; the inside keeps its colours (the lungs around an infection overlay)."""
    out = rgb.copy()
    out[inner_boundary(mask)] = colour
    return out


def heat_tint(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """A [0, 1] heat map over an RGB image, each pixel blended by ``opacity * heat``: cold areas stay as they are.

    For maps that are mostly zero (a thresholded attention map), where ``heat_overlay`` would paint the
    whole image in the colour map's cold end.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0, 1)
    colours = colormaps[cmap](heat)[..., :3].astype(np.float32) * 255
    weight = (opacity * heat)[..., None]
    return np.clip((1 - weight) * rgb.astype(np.float32) + weight * colours, 0, 255).astype(np.uint8)


def _tint(rgb: np.ndarray, mask: np.ndarray, opacity: float, colour) -> np.ndarray:
    """Inside ``mask``: (1 - opacity) * pixel + opacity * colour in float32, then truncated to uint8; the mask's inner
    outline in ``colour``. Per channel the result depends only on the 8-bit value and the pixel's state (outside,
    inside, outline): one look-up per channel in a (3 x 256, 3) table, over the mask's bounding box only."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    box = padded_bounding_box(mask)
    if box is None:
        return out
    mask = mask[box]  # grown by a pixel: the box's own edge is outside the mask unless it is the image's edge
    table = np.concatenate([_GREY_TABLE, _tint_table(opacity, colour)])
    state = np.multiply(mask.view(np.uint8) + inner_boundary(mask).view(np.uint8), 256, dtype=np.uint16)
    region = out[box]
    for c in range(3):
        region[..., c] = table[:, c].take(state + region[..., c])
    return out


def _grey_tints(gray: np.ndarray, masks: list, opacity: float) -> np.ndarray:
    """``_tint`` of ``to_rgb(gray)`` with each boolean (mask, colour) in turn, for masks that do not overlap.

    A pixel's colour depends only on its 8-bit grey level and its state (outside every mask, inside or on the
    outline of one of them): one (256 x states, 3) table of colours and one look-up, as ``heat_overlay`` does.
    """
    tables = [_GREY_TABLE]
    index = to_grey_levels(gray).astype(np.uint16)  # 256 * state + grey level; state 0 outside every mask
    for number, (mask, colour) in enumerate(masks):
        tables.append(_tint_table(opacity, colour))
        box = padded_bounding_box(mask)  # its outline is the same within the box, grown by a pixel (see _tint)
        if box is not None:
            inside = mask[box]
            state = inside.view(np.uint8) * np.uint16(2 * number + 1)  # inside mask k: 2k + 1, one state per pixel
            state += inner_boundary(inside)  # its outline (inside it): 2k + 2
            index[box] += state * np.uint16(256)
    return np.concatenate(tables).take(index, axis=0)


def _tint_table(opacity: float, colour) -> np.ndarray:
    """uint8 (512, 3): rows 0-255, an 8-bit value tinted per channel (in float32, as the plain blend); 256-511, the
    outline colour."""
    tint = np.array(colour, dtype=np.float32)
    levels = np.arange(256, dtype=np.uint8).astype(np.float32)
    tinted = ((1 - opacity) * levels[:, None] + opacity * tint[None]).astype(np.uint8)  # (256, 3)
    return np.concatenate([tinted, np.repeat(tint.astype(np.uint8)[None], 256, axis=0)])


_GREY_TABLE = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # an 8-bit value in each channel
_GREY_TABLE.flags.writeable = False


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.find_boundaries(mask, mode="inner")`` for a boolean mask: the mask's pixels with a
    4-neighbour outside it (the image's edge is not a boundary), from the mask and its shifts along each axis."""
    mask = np.asarray(mask, dtype=bool)
    boundary = np.zeros(mask.shape, bool)
    for axis in range(mask.ndim):
        before = tuple(slice(None, -1) if a == axis else slice(None) for a in range(mask.ndim))
        after = tuple(slice(1, None) if a == axis else slice(None) for a in range(mask.ndim))
        boundary[after] |= mask[after] > mask[before]  # inside, its neighbour before it outside
        boundary[before] |= mask[before] > mask[after]  # inside, its neighbour after it outside
    return boundary


def draw_box(rgb: np.ndarray, box, colour, thickness: int = 2) -> np.ndarray:
    """A rectangle outline for ``box`` = (row slice, column slice) on a copy of ``rgb``; None draws nothing."""
    out = rgb.copy()
    if box is None:
        return out
    rows, cols = box
    top, bottom = rows.start, max(rows.stop - 1, rows.start)
    left, right = cols.start, max(cols.stop - 1, cols.start)
    t = max(1, thickness)
    out[top:top + t, left:right + 1] = colour
    out[max(bottom - t + 1, 0):bottom + 1, left:right + 1] = colour
    out[top:bottom + 1, left:left + t] = colour
    out[top:bottom + 1, max(right - t + 1, 0):right + 1] = colour
    return out


def probability_figure(probabilities: dict[str, float]) -> go.Figure:
    names = list(probabilities)
    values = [probabilities[n] for n in names]
    top = int(np.argmax(values))
    figure = go.Figure(
        go.Bar(
            x=values, y=[class_title(n) for n in names], orientation="h",
            text=[f"{v:.1%}" for v in values], textposition="auto",
            marker_color=["#e4572e" if i == top else "#6c8ebf" for i in range(len(names))],
        )
    )
    figure.update_layout(
        xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"), yaxis=dict(autorange="reversed"),
        height=260, margin=dict(l=10, r=10, t=10, b=10),
    )
    return figure


def reliability_figure(calibration: dict) -> go.Figure | None:
    """Reliability diagram of a card's ``calibration`` entry: accuracy against mean confidence per confidence bin
    on test, before and after the temperature, with the diagonal of perfect calibration; None without the bins."""
    tables = (calibration or {}).get("reliability") or {}
    if not tables.get("before") or not tables.get("after"):
        return None
    figure = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                  line={"color": "#999999", "dash": "dash"}))
    for key, colour in (("before", "#e4572e"), ("after", "#2e86ab")):
        rows = [row for row in tables[key] if row["n"]]
        ece = calibration.get(f"ece_{key}")
        figure.add_trace(go.Scatter(
            x=[row["confidence"] for row in rows], y=[row["accuracy"] for row in rows], mode="lines+markers",
            name=f"{key} (ECE {ece:.3f})" if ece is not None else key, line={"color": colour},
            marker={"size": [6 + 14 * (row["n"] / max(r["n"] for r in rows)) ** 0.5 for row in rows]},
            customdata=[row["n"] for row in rows], hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>n %{customdata}",
        ))
    figure.update_layout(
        xaxis={"range": [0, 1], "title": "mean confidence (top label)"}, yaxis={"range": [0, 1], "title": "accuracy"},
        height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title={"text": f"Reliability on {calibration.get('evaluated_on', 'test')}, T = {calibration['temperature']:.3f}",
               "font": {"size": 13}},
        legend={"x": 0.02, "y": 0.98},
    )
    return figure


def confusion_figure(labels: list[str], confusion: list[list[int]], title: str = "") -> go.Figure:
    """Reader (rows) against model (columns) counts as a heat map with the counts written in."""
    names = [class_title(label) for label in labels]
    figure = go.Figure(go.Heatmap(z=confusion, x=names, y=names, colorscale="Blues", showscale=False,
                                  text=confusion, texttemplate="%{text}",
                                  hovertemplate="reader %{y}<br>model %{x}<br>%{z} reviews<extra></extra>"))
    figure.update_layout(xaxis={"title": "model's label"}, yaxis={"title": "reader's label", "autorange": "reversed"},
                         height=120 + 40 * len(labels), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         title={"text": title, "font": {"size": 13}})
    return figure


def agreement_over_time_figure(weeks: list[dict]) -> go.Figure:
    """Weekly reader vs model agreement with its 95 % interval (``core.reviews.agreement.agreement_over_time``)."""
    x = [row["week"] for row in weeks]
    rate = [row["agreement"] for row in weeks]
    figure = go.Figure(go.Scatter(
        x=x, y=[r.estimate for r in rate], mode="lines+markers", name="agreement",
        error_y={"type": "data", "symmetric": False, "array": [r.high - r.estimate for r in rate],
                 "arrayminus": [r.estimate - r.low for r in rate]},
        customdata=[row["n"] for row in weeks], hovertemplate="week of %{x}<br>agreement %{y:.0%}<br>%{customdata} reviews",
    ))
    figure.update_layout(yaxis={"range": [0, 1.05], "tickformat": ".0%", "title": "reader agrees with model"},
                         xaxis={"title": "week"}, height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return figure
