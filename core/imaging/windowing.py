"""CT display windows: Hounsfield units -> grey levels in [0, 1].

A window is a level (its centre, HU) and a width (HU): values at or below ``level - width / 2`` are
black, at or above ``level + width / 2`` white, linear in between. The lung window (level -600,
width 1500) is exactly the [-1350, 150] HU range of the CT papers (paper 004's input window, the
pack's lung-window exports); it is also the one CT model input (``CT_MODEL_WINDOW``). Any other
level and width (the page's free window) goes through the same ``apply_window``.

The mapping is the plain linear one of the papers, not DICOM's ``WindowCenter``/``WindowWidth``
formula (PS3.3 C.11.2.1.2, which shifts by half a grey level): the models were trained on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    name: str
    level: float  # HU at the middle grey
    width: float  # HU from black to white

    def __post_init__(self) -> None:
        if not (math.isfinite(self.level) and math.isfinite(self.width)) or self.width <= 0:
            raise ValueError(f"A window needs a finite level and a positive width, got {self.level} / {self.width}.")

    @property
    def low(self) -> float:
        """HU shown black (and everything below)."""
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        """HU shown white (and everything above)."""
        return self.level + self.width / 2

    @classmethod
    def from_range(cls, low: float, high: float, name: str = "custom") -> "Window":
        """The window that maps ``low`` HU to black and ``high`` HU to white, e.g. ``from_range(-1350, 150)``."""
        return cls(name, (low + high) / 2, high - low)


LUNG = Window("lung", -600, 1500)  # [-1350, 150] HU
MEDIASTINUM = Window("mediastinum", 40, 400)  # [-160, 240] HU
PRESETS: dict[str, Window] = {w.name: w for w in (LUNG, MEDIASTINUM)}
CT_MODEL_WINDOW = LUNG  # every CT model sees this window (core.imaging.ct_input)


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """float32 grey levels in [0, 1]: ``clip((hu - low) / width, 0, 1)``; NaN becomes 0 (black)."""
    values = (np.asarray(hu, dtype=np.float64) - window.low) / window.width
    return np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0).astype(np.float32)
