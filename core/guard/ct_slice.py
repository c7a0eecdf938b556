"""Is this one axial chest CT slice? Refuse clearly what the CT slice models must not see.

``check_ct_slice`` raises a typed ``InputError`` with a message for the user, or returns the study
(a copy, with any added warnings). Checks, in order: modality (radiographs go to the Chest X-ray
page; MR, PET, ultrasound and the rest are refused), one frame (multi-frame files go to the CT
volume page), an axial plane (ImageOrientationPatient), Hounsfield units plausible for CT, then
size and blankness.

Files that carry HU (``study.hu``, set by the loader for CT DICOM and for DICOM without a Modality
tag whose values are plainly HU) are checked on their HU. 8-bit exports (PNG/JPEG, or a CT DICOM
without HU) carry no HU and no modality: they are accepted with a visible note, and only the pixel
rules apply to them (whether they show a chest CT at all is the image-kind gate's job).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import UnsupportedInputError
from ..imaging.hounsfield import hu_problem, summarise_hu
from ..study import Study
from .pixels import MAX_ASPECT_RATIO, MIN_SIDE_PX, ImageWords, check_image_shape, is_blank  # noqa: F401
from .modalities import (
    CT_MODALITIES,
    CT_SLICE_PAGE,
    CT_VOLUME_PAGE,
    CXR_PAGE,
    RADIOGRAPH_MODALITIES,
    UNCERTAIN_MODALITIES,
    modality_description,
)

WORDS = ImageWords(kind="CT slice", typical="a CT slice is normally 512 x 512", upload="slice",
                   square="an axial CT slice", single="slice")
MAX_AXIAL_TILT_DEG = 20.0  # slice normal vs the patient's z axis; above: a reformat (gantry tilt stays below)

NO_HU_WARNING = (
    "No Hounsfield units: this is an 8-bit exported image, so the display window is the one chosen when it "
    "was exported and the window presets cannot change it. The models see it as exported; upload the CT "
    "DICOM for HU windows."
)
NO_MODALITY_HU_WARNING = (
    "The DICOM file has no Modality tag; its values look like CT Hounsfield units (air near -1000, body near 0), "
    "so it is analysed as a CT slice. Check that it is an axial chest CT slice."
)
OT_WARNING = (
    "The DICOM file gives its modality as 'OT' (other), so it cannot confirm that this is a CT slice. "
    "Check that it is an axial chest CT slice before relying on the result."
)
HU_PROBLEMS = {  # hounsfield.hu_problem key -> what is wrong
    "outside-field": "most of the image lies far below the value of air (-1100 HU or lower)",
    "blank": "the image is blank (the same value everywhere)",
    "above-range": "many values lie above the CT range (over 3071 HU)",
    "no-air": "nothing in it is as dark as air or lung (-800 HU or lower), which every chest CT slice shows",
    "no-body": "nothing in it has the values of soft tissue (around 0 HU)",
}


def check_ct_slice(study: Study) -> Study:
    """Return ``study`` (copied, possibly with more warnings) or raise an ``InputError``."""
    warnings: list[str] = []
    _check_modality(study, warnings)
    _check_single_frame(study.frames)
    _check_axial(study.image_orientation, warnings)
    if study.hu is not None:
        _check_hounsfield(study.hu)
    _check_pixels(study)
    return dataclasses.replace(study, warnings=[*study.warnings, *warnings])


def _check_modality(study: Study, warnings: list[str]) -> None:
    modality = (study.modality or "").strip().upper()
    if modality in CT_MODALITIES:
        if study.hu is None:
            warnings.append(NO_HU_WARNING)
        return
    if modality in RADIOGRAPH_MODALITIES:
        raise UnsupportedInputError(
            f"This is {modality_description(modality)}, not a CT slice; the {CT_SLICE_PAGE} page analyses axial "
            f"chest CT slices. Use the {CXR_PAGE} page for chest radiographs."
        )
    if modality in UNCERTAIN_MODALITIES:
        warnings.append(OT_WARNING)
        if study.hu is None:
            warnings.append(NO_HU_WARNING)
        return
    if modality:
        raise UnsupportedInputError(
            f"This is {modality_description(modality)}; the {CT_SLICE_PAGE} page analyses axial chest CT slices only."
        )
    # no modality: plain images, and DICOM files without the tag
    if study.hu is not None:
        warnings.append(NO_MODALITY_HU_WARNING)
    elif study.file_format == "dicom" and _bits_stored(study) > 8:
        raise UnsupportedInputError(
            "The DICOM file has no Modality tag and its values are not CT Hounsfield units, so it cannot be "
            f"analysed as a CT slice. Upload the CT DICOM as exported by the scanner, or a slice exported "
            f"as PNG/JPEG in a lung window. For chest radiographs use the {CXR_PAGE} page."
        )
    else:
        warnings.append(NO_HU_WARNING)


def _bits_stored(study: Study) -> int:
    try:
        return int(study.metadata.get("BitsStored", "16"))
    except ValueError:
        return 16


def _check_single_frame(frames: int) -> None:
    if frames > 1:
        raise UnsupportedInputError(
            f"This file holds {frames} frames (a multi-frame image or a whole series); the {CT_SLICE_PAGE} page "
            f"analyses one axial slice. Open the series on the {CT_VOLUME_PAGE} page, or upload a single slice."
        )


def slice_plane(orientation: tuple[float, ...]) -> tuple[str, float] | None:
    """('axial' | 'coronal' | 'sagittal' | 'oblique', degrees between the slice normal and the nearest axis).

    The normal is row x column of ImageOrientationPatient (patient axes x: right to left, y: anterior
    to posterior, z: feet to head). None when the two direction vectors do not span a plane.
    """
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:6], dtype=float)
    normal = np.cross(row, col)
    length = float(np.linalg.norm(normal))
    if not np.isfinite(length) or length < 1e-3:
        return None
    cosines = np.abs(normal / length)
    axis = int(np.argmax(cosines))
    angle = float(np.degrees(np.arccos(np.clip(cosines[axis], -1.0, 1.0))))
    if angle > MAX_AXIAL_TILT_DEG:
        return "oblique", float(np.degrees(np.arccos(np.clip(cosines[2], -1.0, 1.0))))
    return ("sagittal", "coronal", "axial")[axis], angle


def _check_axial(orientation: tuple[float, ...] | None, warnings: list[str]) -> None:
    if orientation is None:
        return  # plain images, and DICOM without the tag: nothing to check
    plane = slice_plane(orientation)
    if plane is None:
        warnings.append(
            "The file's Image Orientation (Patient) is invalid, so it cannot confirm an axial slice. "
            "Check that this is an axial slice."
        )
        return
    name, angle = plane
    if name == "axial":
        return
    article = "an" if name == "oblique" else "a"
    detail = f" ({angle:.0f} degrees from axial)" if name == "oblique" else ""
    raise UnsupportedInputError(
        f"This is {article} {name} slice{detail}, a reformat; the {CT_SLICE_PAGE} page analyses axial slices, "
        "as the models were trained on. Upload an axial slice of the series."
    )


def _check_hounsfield(hu: np.ndarray) -> None:
    problem = hu_problem(summarise_hu(hu))
    if problem == "blank":
        raise UnsupportedInputError(_blank_message())
    if problem is not None:
        raise UnsupportedInputError(
            f"The file's values are not plausible CT Hounsfield units: {HU_PROBLEMS[problem]}. The rescale "
            "slope/intercept may be wrong or this may not be a CT image. Upload the CT DICOM as exported by the "
            "scanner, or a slice exported as PNG/JPEG in a lung window."
        )


def _blank_message() -> str:
    return (
        "The image is blank (almost the same value everywhere), so there is nothing to analyse. "
        "Check that the right file was exported."
    )


def _check_pixels(study: Study) -> None:
    check_image_shape(study.pixels, WORDS)
    if study.hu is None and is_blank(study.pixels):  # with HU, _check_hounsfield did it
        raise UnsupportedInputError(_blank_message())
