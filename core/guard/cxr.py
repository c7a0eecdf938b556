"""Is this a frontal chest radiograph? Refuse clearly what the X-ray models must not see.

``check_chest_xray`` raises a typed ``InputError`` with a message for the user, or returns the study
(a copy, with any added warnings). The rules are the tables below; plain PNG/JPEG files carry no
metadata, so only the pixel rules (size, aspect ratio, blank) apply to them.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ..errors import UnsupportedInputError
from ..study import Study
from .pixels import MAX_ASPECT_RATIO, MIN_SIDE_PX, ImageWords, check_image_shape, is_blank  # noqa: F401
from .modalities import (  # noqa: F401  (MODALITY_NAMES re-exported: it used to live here)
    CT_SLICE_PAGE,
    MODALITY_NAMES,
    RADIOGRAPH_MODALITIES,
    UNCERTAIN_MODALITIES,
    modality_description,
)

# --- modality (tables shared with the CT guard) ----------------------------------------------------
OTHER_PAGES = {"CT": f"Use the {CT_SLICE_PAGE} page."}  # pages that analyse other modalities

# --- view ----------------------------------------------------------------------------------------
FRONTAL_VIEWS = {"PA", "AP", "POSTERO_ANTERIOR", "ANTERO_POSTERIOR", "FRONTAL"}
LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT", "LEFT LATERAL", "RIGHT LATERAL", "XTABLE LATERAL"}
OBLIQUE_VIEWS = {"RLO", "LLO", "RAO", "LAO", "RPO", "LPO", "OBLIQUE", "OBL"}
DECUBITUS_VIEWS = {"RLD", "LLD"}  # frontal projection of a lying patient: accepted with a warning
LATERAL_WORDS = {"LAT", "LATERAL", "LL", "RL"}  # inside a body part such as "CHEST_LAT"

# --- body part -----------------------------------------------------------------------------------
CHEST_WORDS = {"CHEST", "THORAX", "LUNG", "LUNGS", "TORAX", "THORACIC", "CXR", "TORACE", "POUMON", "BRUST"}

# --- pixels --------------------------------------------------------------------------------------
WORDS = ImageWords(kind="radiograph", typical="a chest radiograph is normally 1000 pixels or more", upload="image",
                   square="a chest radiograph", single="chest X-ray")


def check_chest_xray(study: Study) -> Study:
    """Return ``study`` (copied, possibly with more warnings) or raise an ``InputError``."""
    warnings: list[str] = []
    _check_modality(study.modality, warnings)
    _check_not_hounsfield(study)
    _check_view(study.view, warnings)
    _check_body_part(study.body_part)
    _check_pixels(study.pixels)
    return dataclasses.replace(study, warnings=[*study.warnings, *warnings])


def _words(value: str) -> set[str]:
    return set(re.split(r"[^A-Z0-9]+", value.upper())) - {""}


def _check_modality(modality: str | None, warnings: list[str]) -> None:
    if not modality:
        return
    modality = modality.strip().upper()
    if modality in RADIOGRAPH_MODALITIES:
        return
    if modality in UNCERTAIN_MODALITIES:
        warnings.append(
            "The DICOM file gives its modality as 'OT' (other), so it cannot confirm that this is a "
            "radiograph. Check that it is a frontal chest X-ray before relying on the result."
        )
        return
    what = modality_description(modality)
    redirect = OTHER_PAGES.get(modality, "")
    raise UnsupportedInputError(
        f"This is {what}; the Chest X-ray page analyses radiographs (CR/DX). {redirect}".strip()
    )


def _check_not_hounsfield(study: Study) -> None:
    """The loader found CT Hounsfield units in a file without a CT Modality tag: still CT."""
    if study.hu is not None:
        raise UnsupportedInputError(
            "This file holds CT values (Hounsfield units), not a radiograph; the Chest X-ray page analyses "
            f"radiographs (CR/DX). {OTHER_PAGES['CT']}"
        )


def _check_view(view: str | None, warnings: list[str]) -> None:
    if not view:
        return  # unknown: plain images and many DICOM files; nothing to say
    view = view.strip().upper()
    if view in FRONTAL_VIEWS:
        return
    if view in LATERAL_VIEWS or _words(view) & {"LATERAL", "LAT"}:
        raise UnsupportedInputError(
            f"This is a lateral view (View Position '{view}'); the Chest X-ray page analyses frontal "
            "(PA or AP) radiographs only. Upload the frontal image of the study."
        )
    if view in OBLIQUE_VIEWS:
        raise UnsupportedInputError(
            f"This is an oblique view (View Position '{view}'); the Chest X-ray page analyses frontal "
            "(PA or AP) radiographs only. Upload the frontal image of the study."
        )
    if view in DECUBITUS_VIEWS:
        warnings.append(
            f"This is a decubitus view (View Position '{view}'): the patient was lying on one side. "
            "The models were trained on upright or supine frontal images; interpret with care."
        )
        return
    warnings.append(
        f"The view position '{view}' is not a standard frontal view (PA or AP); check the image orientation."
    )


def _check_body_part(body_part: str | None) -> None:
    if not body_part or not body_part.strip():
        return  # unknown is allowed
    words = _words(body_part)
    label = body_part.strip().upper()
    if words & CHEST_WORDS and words & LATERAL_WORDS:
        raise UnsupportedInputError(
            f"This is a lateral chest view (Body Part '{label}'); the Chest X-ray page analyses frontal "
            "(PA or AP) radiographs only. Upload the frontal image of the study."
        )
    if not words & CHEST_WORDS:
        raise UnsupportedInputError(
            f"The file says the body part examined is '{label}', not the chest; the Chest X-ray page "
            "analyses chest radiographs only."
        )


def _check_pixels(pixels: np.ndarray) -> None:
    check_image_shape(pixels, WORDS)
    if is_blank(pixels):
        raise UnsupportedInputError(
            "The image is blank (almost the same grey level everywhere), so there is nothing to analyse. "
            "Check that the right file was exported."
        )
