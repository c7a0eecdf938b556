"""``Study``: one decoded image and the non-identifying facts about it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Study:
    pixels: np.ndarray  # float32 in [0, 1], 2-D, displayed as is (MONOCHROME1 already inverted)
    file_format: str  # "png", "jpeg", "bmp", "tiff", "dicom" (also "nifti" for slices of a volume)
    modality: str | None = None  # DICOM Modality (CR, DX, CT, MR...); None for plain images
    view: str | None = None  # DICOM ViewPosition (PA, AP, LL...), None when unknown
    body_part: str | None = None  # DICOM BodyPartExamined, None when unknown
    burned_in_annotation: bool = False  # DICOM says identifying text may be burned into the pixels
    pixel_spacing_mm: tuple[float, float] | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # only allow-listed, non-identifying fields
    warnings: list[str] = field(default_factory=list)  # shown to the user next to the image
    synthetic: bool = False  # a generated phantom, not a patient image
    # CT: float32 Hounsfield units, same shape as ``pixels`` (which then shows their lung window);
    # None for radiographs and for 8-bit exports, whose grey levels carry no HU.
    hu: np.ndarray | None = None
    frames: int = 1  # frames (DICOM NumberOfFrames, pages of a TIFF); only the first one is decoded
    # DICOM Image Orientation (Patient): row and column direction cosines (6 floats), None when absent
    image_orientation: tuple[float, ...] | None = None

    @property
    def case_hash(self) -> str:
        """SHA-256 of the pixel content: identifies the case in the review log without any patient data."""
        quantised = np.round(self.pixels * 65535).astype("<u2")
        digest = hashlib.sha256(f"{quantised.shape}".encode())
        digest.update(quantised.tobytes())
        return digest.hexdigest()
