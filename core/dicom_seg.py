"""DICOM Segmentation objects (highdicom) of a case that came in as DICOM, so a PACS viewer shows the masks.

Usage::

    masks, algorithms = result_segments(result)        # the pipeline's lung / infection masks and their models
    masks["missed finding"] = region_mask              # reviewer regions: one boolean mask per tag (MANUAL)
    check_exportable(study)                            # SegmentationExportError when no SEG can be made
    data = segmentation_for(study, masks, algorithms=algorithms)   # DICOM Part 10 bytes (a BINARY SEG)
    data = case_segmentation(study, result, {"missed finding": region_mask})   # the same, in one call

``source`` is the ``Study`` of an uploaded DICOM image, or the ``Volume`` of an uploaded DICOM series
(or anything holding one as ``.volume``, as the CT volume page's ``OpenedVolume`` does). A 2-D
study's masks have the shape of ``study.pixels``; a volume's the canonical ``[z, y, x]`` shape of
``volume.hu``, laid back onto the series' slices here (``Volume.to_source_planes``). Each mask becomes
one segment: the names in ``SEGMENT_KINDS`` ("lung", "infection", "ground glass opacity",
"consolidation") get their anatomy or morphology codes, any other name is a reviewer region tag
(coded "Selected region"). A segment named in ``algorithms`` is AUTOMATIC with that model's name,
version and weight hash (AlgorithmIdentificationSequence); the others are MANUAL.

What goes in, and what does not. The SEG references the source by the linkage keys the loader kept
in ``DicomReference`` (Study, Series, SOP Instance and Frame of Reference UIDs, the Retain UIDs
Option of PS3.15 E.3.9), and copies the geometry (orientation, positions, spacing). Nothing else
of the source reaches it: the patient and study attributes that a SEG must carry (Type 2: Patient's
Name, Patient ID, Birth Date, Sex, Accession Number, Study ID, Date and Time, Referring Physician)
are present and empty, and no reviewer name is written. The export's own dates (Content, Series,
Instance Creation) are the time of export. Consequence for PACS: a viewer opens the SEG on its
source study by Study Instance UID; a PACS that files instances by Patient ID (Orthanc, or dcm4chee
with a strict patient-ID policy) files it under an empty patient until its own import rules
reconcile the patient attributes from the study.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage

from .errors import SegmentationExportError
from .study import DicomReference

MSG_NOT_DICOM = ("DICOM SEG export needs a case that was uploaded as DICOM; this case came from a PNG, JPEG, NIfTI "
                 "or demo file, so there are no DICOM images for a SEG to point at.")
SERIES_NUMBER = 9901  # a high series number keeps the SEG after the scanner's series in PACS lists
CONTENT_LABEL = "CHEST_REVIEW"
CONTENT_DESCRIPTION = "Research use only, not for clinical use"
SERIES_DESCRIPTION = "Chest review masks (research use only)"
MANUFACTURER = "Chest imaging review (research use only)"
MODEL_NAME = "chest-review DICOM SEG export"
SOFTWARE_VERSION = "0.1.0"  # pyproject.toml
DEVICE_SERIAL = "none"  # Type 1 in the Enhanced General Equipment module; the software has no serial number
REGION_LABEL = "Reviewer region: {}"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ,.()/_+-]{0,39}")  # segment names are fixed words, never free text
_SAFE_TEXT = re.compile(r"[A-Za-z0-9 ,.()/_+:-]{1,64}")  # model names and versions (LO)
_CT_CLASSES = {str(CTImageStorage), str(EnhancedCTImageStorage)}  # their IODs require a Frame of Reference


@dataclass(frozen=True)
class SegmentKind:
    """SegmentedPropertyCategory and SegmentedPropertyType (PS3.16 CID 7150 / CID 7151) of one segment name."""

    label: str
    category: Code
    property_type: Code


SEGMENT_KINDS: dict[str, SegmentKind] = {
    "lung": SegmentKind("Lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung),  # SCT 91723000 / 39607008
    # the binary infection model's output: COVID-19 lesions, not yet split (SCT 49755003 / 52988006, CID 7159)
    "infection": SegmentKind("Infection", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
    # DICOM's own term (DCM 112120, CID 6102/6104); no SNOMED CT code for it is listed in PS3.16
    "ground glass opacity": SegmentKind("Ground glass opacity", codes.SCT.MorphologicallyAbnormalStructure,
                                        codes.DCM.GroundGlassOpacity),
    # PS3.16 lists no code for consolidation; RadLex's (RID43255, the Fleischner Society's definition)
    "consolidation": SegmentKind("Consolidation", codes.SCT.MorphologicallyAbnormalStructure,
                                 Code("RID43255", "RADLEX", "Consolidation")),
}
# reviewer regions: a place the reviewer marked, whatever its tag (SCT 309825002 / DCM 111099)
REGION_KIND = SegmentKind("", codes.SCT.SpatialAndRelationalConcept, codes.DCM.SelectedRegion)


@dataclass(frozen=True)
class Algorithm:
    """The model behind an AUTOMATIC segment (a registry card gives all three)."""

    name: str
    version: str
    weights_sha256: str | None = None


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def is_dicom_case(source: Any) -> bool:
    """True when ``source`` (Study, Volume or an object holding ``.volume``) came in as DICOM."""
    return _reference(source) is not None


def check_exportable(source: Any) -> DicomReference:
    """The source's ``DicomReference``; ``SegmentationExportError`` when no SEG can be made for it."""
    reference = _reference(source)
    if reference is None:
        raise SegmentationExportError(MSG_NOT_DICOM)
    missing = [name for name, value in (("Study Instance UID", reference.study_instance_uid),
                                        ("Series Instance UID", reference.series_instance_uid),
                                        ("SOP Class UID", reference.sop_class_uid))
               if value is None]
    if any(frame.sop_instance_uid is None for frame in reference.frames):
        missing.append("SOP Instance UID")
    if len(reference.frames) > 1 or reference.sop_class_uid in _CT_CLASSES:
        missing += _missing_geometry(reference)
    if missing:
        raise SegmentationExportError(
            f"DICOM SEG export needs the source's {', '.join(dict.fromkeys(missing))}, which the uploaded DICOM "
            "file(s) do not give, so a viewer could not place a segmentation on them. The PDF report still has "
            "the masks."
        )
    if len(reference.frames) == 1 and reference.multi_frame:
        raise SegmentationExportError(
            "DICOM SEG export supports single-frame images; this file holds several frames and only the first "
            "one was analysed."
        )
    return reference


def segmentation_for(source: Any, segments: Mapping[str, np.ndarray], *,
                     algorithms: Mapping[str, Any] | None = None) -> bytes:
    """A BINARY DICOM Segmentation (Part 10 bytes) with one segment per mask of ``segments`` (module docstring).

    ``algorithms``: segment name -> ``Algorithm``, a registry ``ModelCard`` (name, version,
    weights_sha256) or a ``(name, version)`` pair; segments without one are MANUAL (drawn by a reviewer).
    """
    reference = check_exportable(source)
    if not segments:
        raise ValueError("segments: give at least one mask")
    algorithms = {name: _algorithm(name, value) for name, value in (algorithms or {}).items()}
    unknown = set(algorithms) - set(segments)
    if unknown:
        raise ValueError(f"algorithms: {sorted(unknown)} name no segment")
    names = list(segments)
    planes = np.stack([_planes(source, reference, name, segments[name]) for name in names], axis=-1)
    if reference.multi_frame:  # stack order -> the file's frame order, the stand-in's (``_multi_frame_dataset``)
        planes = planes[np.argsort([frame.frame_number for frame in reference.frames])]
    descriptions = [_description(number, name, algorithms.get(name)) for number, name in enumerate(names, start=1)]
    try:
        seg = hd.seg.Segmentation(
            source_images=_source_datasets(reference, lossy=_was_lossy(source)),
            pixel_array=planes.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MODEL_NAME,
            software_versions=SOFTWARE_VERSION,
            device_serial_number=DEVICE_SERIAL,
            content_label=CONTENT_LABEL,
            content_description=CONTENT_DESCRIPTION,
            series_description=SERIES_DESCRIPTION,
            omit_empty_frames=bool(planes.any()),  # an all-empty SEG keeps its frames (highdicom needs one)
        )
    except ValueError as exc:  # highdicom's checks of the source geometry; programming errors are caught above
        raise SegmentationExportError(
            "A DICOM SEG cannot be made for this case: the uploaded DICOM header's geometry is inconsistent "
            "or incomplete. The PDF report still has the masks."
        ) from exc
    return _part10(seg)


def case_segmentation(source: Any, result: Any, regions: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The SEG of a page's case: the pipeline result's masks (``result_segments``) and the reviewer's regions."""
    masks, algorithms = result_segments(result)
    return segmentation_for(source, masks | dict(regions or {}), algorithms=algorithms)


def result_segments(result: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(masks, algorithms) of a pipeline result: X-ray (lung), CT slice and CT volume (lung, infection, split).

    With the ground glass / consolidation head the infection is exported whole (the binary model) and
    split (the head); masks keep the result's own shape (the image's, or the volume's canonical one).
    """
    if hasattr(result, "segmenter"):  # CxrResult
        return {"lung": np.asarray(result.lung_mask, dtype=bool)}, {"lung": result.segmenter}
    cards, labels = result.cards, np.asarray(result.infection_labels)
    masks = {"lung": np.asarray(result.lung_mask, dtype=bool), "infection": labels > 0}
    algorithms = {"lung": cards["lungs"], "infection": cards["infection"]}
    if "multiclass" in cards:
        masks |= {"ground glass opacity": labels == 1, "consolidation": labels == 2}
        algorithms |= {"ground glass opacity": cards["multiclass"], "consolidation": cards["multiclass"]}
    return masks, algorithms


# --------------------------------------------------------------------------------------------------
# Masks onto the source's planes
# --------------------------------------------------------------------------------------------------


def _reference(source: Any) -> DicomReference | None:
    source = getattr(source, "volume", source)  # the CT volume page's OpenedVolume
    return getattr(source, "dicom_reference", None)


def _missing_geometry(reference: DicomReference) -> list[str]:
    missing = []
    if reference.frame_of_reference_uid is None:
        missing.append("Frame of Reference UID")
    if reference.image_orientation is None:
        missing.append("Image Orientation (Patient)")
    if reference.pixel_spacing_mm is None:
        missing.append("Pixel Spacing")
    if any(frame.position is None for frame in reference.frames):
        missing.append("Image Position (Patient)")
    if reference.slice_thickness_mm is None:  # a series falls back on its slice spacing; a lone slice cannot
        missing.append("Slice Thickness")
    return missing


def _planes(source: Any, reference: DicomReference, name: str, mask: np.ndarray) -> np.ndarray:
    """``mask`` as (source planes, rows, columns) bool, in the order of ``reference.frames``."""
    mask = np.asarray(mask)
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError(f"segments[{name!r}]: expected a boolean (0/1) mask")
    volume = getattr(source, "volume", source)
    if hasattr(volume, "to_source_planes"):  # a Volume: canonical [z, y, x] -> (slice in stack order, row, column)
        if mask.shape != volume.hu.shape:
            raise ValueError(f"segments[{name!r}]: expected the volume's shape {volume.hu.shape}, got {mask.shape}")
        planes = volume.to_source_planes(mask.astype(bool, copy=False))
    else:
        if mask.shape != volume.pixels.shape:
            raise ValueError(f"segments[{name!r}]: expected the image's shape {volume.pixels.shape}, got {mask.shape}")
        planes = mask.astype(bool)[None]
    expected = (len(reference.frames), reference.rows, reference.columns)
    if planes.shape != expected:  # the loader's pixels always match the header; anything else is a bug
        raise ValueError(f"segments[{name!r}]: planes {planes.shape} do not match the DICOM source {expected}")
    return planes


# --------------------------------------------------------------------------------------------------
# Segment descriptions
# --------------------------------------------------------------------------------------------------


def _algorithm(name: str, value: Any) -> Algorithm:
    if isinstance(value, Algorithm):
        algorithm = value
    elif isinstance(value, tuple) and len(value) == 2:
        algorithm = Algorithm(str(value[0]), str(value[1]))
    elif hasattr(value, "name") and hasattr(value, "version"):  # a registry ModelCard
        algorithm = Algorithm(str(value.name), str(value.version), getattr(value, "weights_sha256", None))
    else:
        raise ValueError(f"algorithms[{name!r}]: expected an Algorithm, a ModelCard or a (name, version) pair")
    for field_name in ("name", "version"):
        if not _SAFE_TEXT.fullmatch(getattr(algorithm, field_name)):
            raise ValueError(f"algorithms[{name!r}].{field_name}: 1 to 64 letters, digits, spaces or .,()/_+:-")
    return algorithm


def _description(number: int, name: str, algorithm: Algorithm | None) -> hd.seg.SegmentDescription:
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"segments: the name {name!r} is not a plain tag (letters, digits, spaces, .,()/_+-; 1-40)")
    kind = SEGMENT_KINDS.get(name.lower())
    label = kind.label if kind else REGION_LABEL.format(name)
    kind = kind or REGION_KIND
    identification = None
    if algorithm is not None:
        parameters = {"weights_sha256": algorithm.weights_sha256} if algorithm.weights_sha256 else None
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=codes.cid7162.ArtificialIntelligence, version=algorithm.version,
            parameters=parameters)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=kind.category,
        segmented_property_type=kind.property_type,
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if algorithm
                        else hd.seg.SegmentAlgorithmTypeValues.MANUAL),
        algorithm_identification=identification,
    )


# --------------------------------------------------------------------------------------------------
# Stand-ins for the source images: only what the loader kept
# --------------------------------------------------------------------------------------------------

# Type 2 attributes highdicom copies from the source into the SEG's patient and study modules: empty here.
_EMPTY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                "StudyDate", "StudyTime", "ReferringPhysicianName")


def _was_lossy(source: Any) -> bool:
    """The source says it was lossy compressed at some point (the SEG derived from it must say so too)."""
    metadata = getattr(getattr(source, "volume", source), "metadata", None) or {}
    return metadata.get("LossyImageCompression") == "01"


def _source_datasets(reference: DicomReference, *, lossy: bool = False) -> list[Dataset]:
    """Header-only datasets standing in for the source images, built from ``reference`` alone.

    The SEG is derived from these, so nothing of the uploaded header but the linkage keys and the
    geometry can reach it. With full geometry the SEG is in the patient coordinate system; without it
    (a radiograph without a Frame of Reference) its one frame is aligned pixel for pixel with the image.
    """
    in_patient_space = not _missing_geometry(reference)
    if reference.multi_frame:
        datasets = [_multi_frame_dataset(reference)]
    else:
        datasets = []
        for frame in reference.frames:
            ds = _common_dataset(reference, frame.sop_instance_uid, in_patient_space)
            if in_patient_space:
                ds.ImagePositionPatient = list(frame.position)
                ds.ImageOrientationPatient = list(reference.image_orientation)
                ds.PixelSpacing = list(reference.pixel_spacing_mm)
                ds.SliceThickness = reference.slice_thickness_mm
            datasets.append(ds)
    for ds in datasets:
        ds.LossyImageCompression = "01" if lossy else "00"
    return datasets


def _common_dataset(reference: DicomReference, sop_instance_uid: str, in_patient_space: bool) -> Dataset:
    ds = Dataset()
    for keyword in _EMPTY_TYPE2:
        setattr(ds, keyword, "")
    ds.SOPClassUID = reference.sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = reference.study_instance_uid
    ds.SeriesInstanceUID = reference.series_instance_uid
    ds.Modality = reference.modality or "OT"
    ds.Rows, ds.Columns = reference.rows, reference.columns
    if in_patient_space:
        ds.FrameOfReferenceUID = reference.frame_of_reference_uid
    return ds


def _multi_frame_dataset(reference: DicomReference) -> Dataset:
    """An Enhanced CT stand-in: frames in the file's order (``frame_number``), so SEG frame i is source frame i."""
    ds = _common_dataset(reference, reference.frames[0].sop_instance_uid, True)
    by_number = sorted(reference.frames, key=lambda frame: frame.frame_number)
    ds.NumberOfFrames = len(by_number)
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(reference.image_orientation)
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = list(reference.pixel_spacing_mm)
    shared.PixelMeasuresSequence[0].SliceThickness = reference.slice_thickness_mm
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for frame in by_number:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = list(frame.position)
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    return ds


def _part10(seg: Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
