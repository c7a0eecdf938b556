"""``Study``: one decoded image and the non-identifying facts about it; ``DicomReference``: where a DICOM input sits.

``DicomReference`` keeps the DICOM linkage keys (Study, Series, SOP Instance and Frame of Reference
UIDs) and the image geometry of a DICOM input, and nothing else: it exists so that a DICOM
Segmentation (``core.dicom_seg``) can point a PACS viewer at the source images. UIDs are not patient
identifiers but they are linkage keys (PS3.15 Annex E lists them for replacement; keeping them is
the profile's Retain UIDs Option, E.3.9): they live only inside the in-memory ``Study``/``Volume``,
are hidden from ``repr`` and are never put into ``metadata``, messages, logs, reviews, CSV files or
the case store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, repr=False)
class DicomFrame:
    """One source image (a file, or a frame of a multi-frame file) behind one 2-D plane of the pixels."""

    sop_instance_uid: str | None
    frame_number: int | None = None  # 1-based frame of a multi-frame file; None for a single-frame file
    position: tuple[float, float, float] | None = None  # ImagePositionPatient (mm, LPS), None when absent


@dataclass(frozen=True, repr=False)
class DicomReference:
    """The DICOM linkage keys and geometry of a DICOM input (see the module docstring); None fields were absent."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_class_uid: str | None
    frame_of_reference_uid: str | None
    modality: str | None
    rows: int
    columns: int
    # one per plane of the pixels, in their order: a 2-D study has one; a volume's are in stack order
    # (inferior to superior along the slice normal), the order of ``Volume.to_source_grid``'s last axis
    frames: tuple[DicomFrame, ...]
    image_orientation: tuple[float, ...] | None = None  # ImageOrientationPatient (6 direction cosines)
    pixel_spacing_mm: tuple[float, float] | None = None  # PixelSpacing (between rows, between columns)
    slice_thickness_mm: float | None = None
    multi_frame: bool = False  # the frames are frames of one multi-frame file (Enhanced CT)

    def __repr__(self) -> str:  # the UIDs stay out of logs and tracebacks
        return f"DicomReference({self.modality}, {len(self.frames)} frame(s), UIDs hidden)"


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
    # DICOM inputs: the linkage keys a DICOM SEG export needs (module docstring); None for other inputs
    dicom_reference: DicomReference | None = field(default=None, repr=False)

    @property
    def case_hash(self) -> str:
        """SHA-256 of the pixel content: identifies the case in the review log without any patient data."""
        quantised = np.round(self.pixels * 65535).astype("<u2")
        digest = hashlib.sha256(f"{quantised.shape}".encode())
        digest.update(quantised.tobytes())
        return digest.hexdigest()
