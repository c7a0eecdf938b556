"""Infection burden groups and the dual-sampling fusion rule of paper 004 (Ouyang et al., IEEE TMI 2020,
doi:10.1109/TMI.2020.2995508), shared by training (``training/recipes/dual_sampling.py``) and serving
(``core/pipelines/ct_volume.py``) so both use the same thresholds.

The ratio is the infection volume over the lung volume (lungs including the infection), in [0, 1].

- ``ratio_band``: the three groups of Table III (< 0.005, 0.005 - 0.030, > 0.030).
- ``sampling_group``: the four groups of the size-balanced sampler (Sec. III-C): COVID-19 small
  < 0.030 <= large; CAP small <= 0.001 < large.
- ``fusion_weight`` and ``dual_sampling_probability``: Eq. 5, P = w P_US + (1 - w) P_SS with w = 0.35
  when the ratio is < 0.001 or > 0.030 (the minority groups lean on the size-balanced model), else 0.96.
"""

from __future__ import annotations

import math

BAND_SMALL_BELOW = 0.005  # Table III
BAND_LARGE_ABOVE = 0.030
RATIO_BANDS = ("small", "medium", "large")
BAND_TITLES = {"small": "< 0.005", "medium": "0.005 - 0.030", "large": "> 0.030"}

COVID_LARGE_FROM = 0.030  # Sec. III-C: COVID-19 "< 0.030" is small, the rest large
CAP_LARGE_ABOVE = 0.001  # Sec. III-C: CAP "> 0.001" is large, the rest small
SAMPLING_GROUPS = ("covid-small", "covid-large", "cap-small", "cap-large")

FUSION_LOW, FUSION_HIGH = 0.001, 0.030  # Eq. 5: outside [0.001, 0.030] the size-balanced model weighs more
FUSION_WEIGHT_OUTSIDE, FUSION_WEIGHT_INSIDE = 0.35, 0.96  # w of the uniform-sampling model


def _checked(ratio: float) -> float:
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"An infection/lung ratio is a finite number >= 0, got {ratio}.")
    return ratio


def ratio_band(ratio: float) -> str:
    """"small" (< 0.005), "medium" (0.005 to 0.030, both included) or "large" (> 0.030): Table III's groups."""
    ratio = _checked(ratio)
    if ratio < BAND_SMALL_BELOW:
        return "small"
    return "large" if ratio > BAND_LARGE_ABOVE else "medium"


def sampling_group(label: str, ratio: float) -> str:
    """The size-balanced sampler's group: "covid-small" / "covid-large" / "cap-small" / "cap-large"."""
    ratio = _checked(ratio)
    if label == "covid":
        return "covid-small" if ratio < COVID_LARGE_FROM else "covid-large"
    if label == "cap":
        return "cap-large" if ratio > CAP_LARGE_ABOVE else "cap-small"
    raise ValueError(f"Size groups exist for the labels 'covid' and 'cap', not {label!r}.")


def fusion_weight(ratio: float) -> float:
    """w of Eq. 5, the uniform-sampling model's share: 0.35 if ratio < 0.001 or ratio > 0.030, else 0.96."""
    ratio = _checked(ratio)
    return FUSION_WEIGHT_OUTSIDE if ratio < FUSION_LOW or ratio > FUSION_HIGH else FUSION_WEIGHT_INSIDE


def dual_sampling_probability(p_us: float, p_ss: float, ratio: float) -> float:
    """Eq. 5: P(COVID-19) = w P_US + (1 - w) P_SS, w = ``fusion_weight(ratio)``."""
    w = fusion_weight(ratio)
    return w * float(p_us) + (1 - w) * float(p_ss)
