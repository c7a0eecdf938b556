"""Pictures of a result: overlays as RGB arrays and plotly figures. No Streamlit here."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps
from skimage.segmentation import find_boundaries

from .classes import class_title

LUNG_COLOUR = (0, 200, 255)


def to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def heat_overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map over the image; ``opacity`` 0 shows the image alone."""
    colours = colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    base = to_rgb(gray).astype(np.float32) / 255.0
    return (np.clip((1 - opacity) * base + opacity * colours, 0, 1) * 255).astype(np.uint8)


def mask_overlay(gray: np.ndarray, mask: np.ndarray, opacity: float = 0.35, colour=LUNG_COLOUR) -> np.ndarray:
    """Tint the mask and draw its outline at full strength so the edge stays visible at low opacity."""
    rgb = to_rgb(gray).astype(np.float32)
    tint = np.array(colour, dtype=np.float32)
    inside = mask.astype(bool)
    rgb[inside] = (1 - opacity) * rgb[inside] + opacity * tint
    rgb[find_boundaries(inside, mode="inner")] = tint
    return rgb.astype(np.uint8)


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
