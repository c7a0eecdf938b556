"""DICOM Modality codes shared by the guards: what each one is, and which page analyses it."""

from __future__ import annotations

RADIOGRAPH_MODALITIES = {"CR", "DX", "DR"}  # the Chest X-ray page
CT_MODALITIES = {"CT"}  # the CT slice page
UNCERTAIN_MODALITIES = {"OT"}  # "other" (secondary captures, exports): accepted with a warning
MODALITY_NAMES = {  # what an image of each modality is, for refusals
    "CR": "a radiograph (computed radiography, CR)",
    "DX": "a radiograph (digital X-ray, DX)",
    "DR": "a radiograph (digital radiography, DR)",
    "CT": "a CT image",
    "MR": "an MR (magnetic resonance) image",
    "PT": "a PET image",
    "NM": "a nuclear medicine image",
    "US": "an ultrasound image",
    "MG": "a mammogram",
    "XA": "an angiography (XA) image",
    "RF": "a fluoroscopy (RF) image",
    "IO": "an intra-oral dental X-ray",
    "PX": "a panoramic dental X-ray",
    "DG": "a diaphanography image",
    "ES": "an endoscopy image",
    "XC": "an external camera photograph",
    "OP": "an ophthalmic photograph",
    "OPT": "an ophthalmic tomography image",
    "SM": "a slide microscopy image",
    "BMD": "a bone densitometry image",
    "SR": "a structured report",
    "SEG": "a segmentation",
    "RTIMAGE": "a radiotherapy image",
}
CXR_PAGE = "Chest X-ray"
CT_SLICE_PAGE = "CT slice"
CT_VOLUME_PAGE = "CT volume"


def modality_description(modality: str) -> str:
    """'an MR (magnetic resonance) image'; an unknown code is quoted (codes are allow-listed by the loader)."""
    return MODALITY_NAMES.get(modality, f"a '{modality}' image")
