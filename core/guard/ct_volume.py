"""Is this a chest CT volume the CT volume pipeline can analyse? Refuse clearly what it must not see.

``check_ct_volume`` raises a typed ``InputError`` with a message for the radiologist, or returns the
volume (a copy, with any added warnings). Checks, in order: size (memory cap, enough slices, big
enough slices), modality (radiographs go to the Chest X-ray page; MR, PET and the rest are refused),
values in Hounsfield units (a mask, an 8-bit export or normalised values are named as such), and a
geometry the slice-by-slice models can use (slice spacing, an axial-compatible grid).

``check_lung_coverage`` runs after lung segmentation: too little lung in view (an abdominal CT with
only the lung bases, a narrow crop) leaves nothing to measure. Its thresholds were measured with
the served CT lung model on the pack's two real volumes (``tests/data/test_ct_volumes_real.py``):
the chest crop ``mediastinum_crop`` gives about 1,380 ml on 112 slices (the same after the 3-D
clean-up of ``core.imaging.volume_masks``), the abdomen/pelvis scan about 580 ml, nearly all of it
bowel gas the 2-D model takes for lung (about 260 ml on 47 slices after the clean-up); a whole adult
chest holds 3,000 ml or more.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import ImageTooSmallError, UnsupportedInputError
from ..imaging.hounsfield import hu_problem, looks_like_hu, summarise_hu
from ..io.volume import MAX_VOXELS, Volume, check_voxel_count
from .ct_slice import HU_PROBLEMS
from .modalities import (
    CT_MODALITIES,
    CT_VOLUME_PAGE,
    CXR_PAGE,
    RADIOGRAPH_MODALITIES,
    UNCERTAIN_MODALITIES,
    modality_description,
)

__all__ = ["MAX_VOXELS", "MIN_LUNG_ML", "MIN_LUNG_SLICES", "MIN_SLICES", "check_ct_volume", "check_lung_coverage",
           "field_of_view_warning"]

MIN_SLICES = 16  # fewer axial slices: not a volume (a few slices, a scout, a single slice)
MIN_SLICE_PX = 64  # rows and columns of each axial slice
MAX_SLICE_SPACING_MM = 10.0  # slices further apart leave too much lung unseen to measure volumes
MAX_PIXEL_SPACING_MM = 5.0
MAX_OBLIQUE_DEG = 20.0  # a voxel axis further than this from every patient axis: an oblique reformat
OBLIQUE_WARNING_DEG = 5.0
MIN_LUNG_ML = 800.0  # lung in view (from the lung segmentation): below, nothing meaningful to measure
MIN_LUNG_SLICES = 10  # axial slices with lung on them
HU_SAMPLE_VOXELS = 2_000_000  # values are judged on a regular subsample of about this many voxels
EDGE_SLICE_FRACTION = 0.1  # lung at the image edge on this share of the lung slices: a cropped field of view
MIN_EDGE_SLICES = 3
MAX_LABEL_VALUES = 8  # a volume with this few whole, non-negative values is a label map (lobes: 6)

NO_MODALITY_HU_WARNING = (
    "The DICOM files have no Modality tag; their values look like CT Hounsfield units (air near -1000, body "
    "near 0), so the series is analysed as a CT volume. Check that it is a chest CT."
)
OT_WARNING = (
    "The DICOM files give their modality as 'OT' (other), so they cannot confirm that this is a CT volume. "
    "Check that it is a chest CT before relying on the result."
)


def check_ct_volume(volume: Volume) -> Volume:
    """Return ``volume`` (copied, possibly with more warnings) or raise an ``InputError``.

    Too large: ``FileTooLargeError`` (the loader checks the headers first; this re-checks any ``Volume``).
    """
    warnings: list[str] = []
    _check_size(volume.hu.shape)
    sample = _sample(volume.hu)
    _check_modality(volume, sample, warnings)
    _check_values(sample)
    _check_geometry(volume, warnings)
    return dataclasses.replace(volume, warnings=[*volume.warnings, *warnings])


def check_lung_coverage(lung_volume_ml: float, lung_slices: int) -> None:
    """Refuse a volume with too little lung in view (``lung_slices``: axial slices showing lung)."""
    if lung_volume_ml < MIN_LUNG_ML or lung_slices < MIN_LUNG_SLICES:
        raise UnsupportedInputError(
            f"Too little lung is in view: about {lung_volume_ml:.0f} ml on {lung_slices} slice(s), where at least "
            f"{MIN_LUNG_ML:.0f} ml on {MIN_LUNG_SLICES} slices is needed to measure lung and infection volumes. "
            "This looks like an abdominal CT showing only the lung bases, or a narrow crop. Upload a chest CT "
            "covering the lungs from the apices to the bases."
        )


def field_of_view_warning(lung_mask: np.ndarray) -> str | None:
    """A warning when the lungs reach the edge of the axial field of view on many slices (a cropped
    reconstruction): the volumes then count only the lung in view, and the 2-D lung model, trained on
    whole-chest slices, misses lung that touches the image edge (on the pack's ``mediastinum_crop``
    it found 495 ml right vs 885 ml left, where the right lung is normally the larger)."""
    lung_slices = lung_mask.any(axis=(1, 2))
    at_edge = (lung_mask[:, 0, :].any(axis=1) | lung_mask[:, -1, :].any(axis=1)
               | lung_mask[:, :, 0].any(axis=1) | lung_mask[:, :, -1].any(axis=1)) & lung_slices
    count, total = int(at_edge.sum()), int(lung_slices.sum())
    if count < max(MIN_EDGE_SLICES, EDGE_SLICE_FRACTION * total):
        return None
    return (f"The field of view cuts through the lungs: lung reaches the edge of the image on {count} of {total} "
            "axial slices. Lung and infection volumes count only the lung in view, and lung at the image edge "
            "may be missed (the lung model was trained on whole-chest slices). Use a reconstruction with the "
            "whole chest in view for volumes.")


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _check_size(shape: tuple[int, int, int]) -> None:
    check_voxel_count(shape)
    slices, rows, columns = shape
    if slices == 1:
        raise UnsupportedInputError(
            f"This is a single CT slice, not a volume. Use the CT slice page for one slice, or upload every "
            f"file of the series here (at least {MIN_SLICES} slices)."
        )
    if slices < MIN_SLICES:
        raise UnsupportedInputError(
            f"The volume has only {slices} axial slices; at least {MIN_SLICES} are needed to analyse the lungs in "
            "3-D. Upload every file of the series, or the whole volume."
        )
    if min(rows, columns) < MIN_SLICE_PX:
        raise ImageTooSmallError(
            f"The axial slices are only {columns} x {rows} voxels; at least {MIN_SLICE_PX} x {MIN_SLICE_PX} are "
            "needed (a CT slice is normally 512 x 512). Upload the full-resolution series."
        )


def _sample(hu: np.ndarray) -> np.ndarray:
    """A regular subsample of about ``HU_SAMPLE_VOXELS`` voxels (value statistics without a copy of the whole)."""
    step = max(1, math.ceil((hu.size / HU_SAMPLE_VOXELS) ** (1 / 3)))
    return np.asarray(hu[::step, ::step, ::step], dtype=np.float32)


def _check_modality(volume: Volume, sample: np.ndarray, warnings: list[str]) -> None:
    modality = (volume.modality or "").strip().upper()
    if modality in CT_MODALITIES:
        return
    if modality in RADIOGRAPH_MODALITIES:
        raise UnsupportedInputError(
            f"This is {modality_description(modality)}, not a CT volume; the {CT_VOLUME_PAGE} page analyses chest "
            f"CT volumes. Use the {CXR_PAGE} page for chest radiographs."
        )
    if modality in UNCERTAIN_MODALITIES:
        warnings.append(OT_WARNING)
        return
    if modality:
        raise UnsupportedInputError(
            f"This is {modality_description(modality)} series; the {CT_VOLUME_PAGE} page analyses chest CT volumes "
            "only (Hounsfield units). Upload the CT series of the examination."
        )
    if volume.file_format.startswith("dicom"):  # a DICOM without Modality: CT only when plainly HU
        if not looks_like_hu(sample):
            raise UnsupportedInputError(
                "The DICOM files have no Modality tag and their values are not CT Hounsfield units, so they cannot "
                "be analysed as a CT volume. Upload the CT series as exported by the scanner."
            )
        warnings.append(NO_MODALITY_HU_WARNING)
    # NIfTI has no modality: its values are the only evidence, checked next


def _check_values(sample: np.ndarray) -> None:
    low, high = float(sample.min()), float(sample.max())
    what = None
    if low >= 0 and np.array_equal(sample, np.rint(sample)) and np.unique(sample).size <= MAX_LABEL_VALUES:
        what = "it holds only a few whole values, like a segmentation mask or label map"
    elif low >= 0 and high <= 1:
        what = "all values lie between 0 and 1, like normalised intensities or a probability map"
    elif low >= 0 and high <= 255:
        what = "all values lie between 0 and 255, like an 8-bit display export"
    elif low >= 0:
        what = "no value is below 0, so air (-1000 HU) is missing: the rescale intercept (often -1024) was not applied"
    if what is None:
        problem = hu_problem(summarise_hu(sample))
        what = HU_PROBLEMS[problem].replace("the image", "the volume") if problem else None
    if what:
        raise UnsupportedInputError(
            f"The volume's values are not CT Hounsfield units: {what}. Upload the CT volume itself, as exported "
            "by the scanner (DICOM) or converted from it with its HU kept (NIfTI)."
        )


def _check_geometry(volume: Volume, warnings: list[str]) -> None:
    dz, dy, dx = volume.spacing_mm
    if not all(math.isfinite(s) and s > 0 for s in (dz, dy, dx)):
        raise UnsupportedInputError("The volume's voxel size is missing or invalid, so volumes cannot be measured.")
    if dz > MAX_SLICE_SPACING_MM:
        raise UnsupportedInputError(
            f"The slices are {dz:.1f} mm apart; at most {MAX_SLICE_SPACING_MM:.0f} mm is supported, since wider gaps "
            "leave too much lung unseen. Upload a thinner-slice reconstruction of the series."
        )
    if max(dy, dx) > MAX_PIXEL_SPACING_MM:
        raise UnsupportedInputError(
            f"The voxels are {max(dy, dx):.1f} mm wide in the axial plane; at most {MAX_PIXEL_SPACING_MM:.0f} mm is "
            "supported. Upload the full-resolution volume, not a downsampled copy."
        )
    angle = _obliquity_deg(volume.source_affine)
    if angle > MAX_OBLIQUE_DEG:
        raise UnsupportedInputError(
            f"The volume is an oblique reformat ({angle:.0f} degrees from the patient's axes); the models analyse "
            "axial slices. Upload the axial series, or a volume resampled to the patient's axes."
        )
    if angle > OBLIQUE_WARNING_DEG:
        warnings.append(
            f"The volume's grid is {angle:.0f} degrees from the patient's axes; its slices are shown and analysed "
            "as axial slices."
        )


def _obliquity_deg(affine: np.ndarray) -> float:
    """The largest angle between a voxel axis and its nearest patient axis."""
    axes = np.asarray(affine, dtype=float)[:3, :3]
    cosines = np.abs(axes).max(axis=0) / np.linalg.norm(axes, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), 0.0, 1.0))))
