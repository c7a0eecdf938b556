"""Do these values look like the Hounsfield units of a chest CT slice?

Used by the loader (a DICOM without a Modality tag is taken as CT only when its values are plainly
HU) and by the CT guard (a CT file whose values are not HU is refused). Only fractions of pixels
in HU bands are used, never the file's header.

Bands: air is -1000 HU, aerated lung about -850, fat -100, soft tissue and blood 0 to 60, bone
400 to 1000 and more. Scanners fill the corners outside the reconstruction circle with -1024 or
lower (-2000, -3024): values below ``OUTSIDE_FIELD_HU`` are treated as outside the field of view,
neither air nor tissue. Standard CT stores -1024 to 3071 HU (12 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AIR_HU = -1000.0
PADDING_HU = -1024.0  # what padding pixels (PixelPaddingValue) become: air
OUTSIDE_FIELD_HU = -1100.0  # below: outside the scan's field of view (padding, corners)
CT_MAX_HU = 3071.0  # top of the standard 12-bit CT range
AIR_BAND = (-1100.0, -900.0)  # "air near -1000"
AIR_OR_LUNG_MAX_HU = -800.0  # any chest slice has air or aerated lung at or below this
BODY_BAND = (-200.0, 200.0)  # "body near 0": water, soft tissue, blood, and most fat

MIN_IN_FIELD_FRACTION = 0.4  # at least this much of the image must be inside the field of view
MIN_AIR_OR_LUNG_FRACTION = 0.001
MIN_BODY_FRACTION = 0.01
MAX_ABOVE_RANGE_FRACTION = 0.01  # a few metal pixels beyond 3071 HU are fine, a whole image is not
MIN_HU_SPREAD = 5.0  # standard deviation (HU) of the in-field pixels below which the slice is blank
# Stricter bands to take a file without a Modality tag as CT ("plainly HU")
PLAIN_AIR_FRACTION = 0.005
PLAIN_BODY_FRACTION = 0.05


@dataclass(frozen=True)
class HuSummary:
    in_field_fraction: float  # pixels at or above OUTSIDE_FIELD_HU, of all pixels
    air_fraction: float  # in-field pixels in AIR_BAND, of the in-field pixels (same below)
    air_or_lung_fraction: float  # in-field pixels at or below AIR_OR_LUNG_MAX_HU
    body_fraction: float  # in-field pixels in BODY_BAND
    above_range_fraction: float  # in-field pixels above CT_MAX_HU
    spread: float  # standard deviation of the in-field pixels (HU)


def summarise_hu(hu: np.ndarray) -> HuSummary:
    values = np.asarray(hu, dtype=np.float64)
    values = values[np.isfinite(values)]
    in_field = values[values >= OUTSIDE_FIELD_HU]
    if in_field.size == 0:
        return HuSummary(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def fraction(selected: np.ndarray) -> float:
        return float(np.count_nonzero(selected)) / in_field.size

    return HuSummary(
        in_field_fraction=in_field.size / max(values.size, 1),
        air_fraction=fraction((in_field >= AIR_BAND[0]) & (in_field <= AIR_BAND[1])),
        air_or_lung_fraction=fraction(in_field <= AIR_OR_LUNG_MAX_HU),
        body_fraction=fraction((in_field >= BODY_BAND[0]) & (in_field <= BODY_BAND[1])),
        above_range_fraction=fraction(in_field > CT_MAX_HU),
        spread=float(in_field.std()),
    )


def hu_problem(summary: HuSummary) -> str | None:
    """Why these cannot be the HU of a chest CT slice, as a key, or None when they can.

    Keys, in the order they are checked: ``"outside-field"`` (most pixels far below air),
    ``"blank"`` (one value everywhere), ``"above-range"`` (beyond the CT range), ``"no-air"``
    (nothing as dark as air or lung), ``"no-body"`` (no soft tissue near 0 HU).
    """
    if summary.in_field_fraction < MIN_IN_FIELD_FRACTION:
        return "outside-field"
    if summary.spread < MIN_HU_SPREAD:
        return "blank"
    if summary.above_range_fraction > MAX_ABOVE_RANGE_FRACTION:
        return "above-range"
    if summary.air_or_lung_fraction < MIN_AIR_OR_LUNG_FRACTION:
        return "no-air"
    if summary.body_fraction < MIN_BODY_FRACTION:
        return "no-body"
    return None


def looks_like_hu(hu: np.ndarray) -> bool:
    """Plainly HU: plausible for CT, with air near -1000 and body near 0 in clear amounts."""
    summary = summarise_hu(hu)
    return (
        hu_problem(summary) is None
        and summary.air_fraction >= PLAIN_AIR_FRACTION
        and summary.body_fraction >= PLAIN_BODY_FRACTION
    )
