"""Image maths shared by serving and training that is not specific to one model.

``windowing``: CT display windows (lung, mediastinum, any level/width). ``ct_input``: the one CT
model input (HU -> lung window -> 256 levels). ``hounsfield``: do values look like CT HU?
``regions``: paper 002's heat-map crop and left/right infected boxes.
"""

from .ct_input import ct_model_pixels, hu_to_model_pixels, quantise
from .hounsfield import HuSummary, hu_problem, looks_like_hu, summarise_hu
from .windowing import CT_MODEL_WINDOW, LUNG, MEDIASTINUM, PRESETS, Window, apply_window

__all__ = [
    "CT_MODEL_WINDOW", "HuSummary", "LUNG", "MEDIASTINUM", "PRESETS", "Window", "apply_window", "ct_model_pixels",
    "hu_problem", "hu_to_model_pixels", "looks_like_hu", "quantise", "summarise_hu",
]
