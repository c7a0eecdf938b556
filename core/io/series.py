"""DICOM series (several files, a zip, a folder) and Enhanced CT multi-frame files into one ``Volume``.

Slices are stacked by their position along the slice normal (ImagePositionPatient projected on
row x column of ImageOrientationPatient), never by file name or InstanceNumber. A series is refused,
with a message that says which slices, when it is not one series, not one orientation, not axial,
acquired with a gantry tilt, or has duplicate, missing or unevenly spaced slices. Headers are read
first (without pixels): every check, the memory cap included, runs before any pixel is decoded.
Each file goes through the same decoding and de-identification as a single DICOM file
(``core.io.dicom``): only allow-listed attributes leave; the UIDs a DICOM SEG export needs are kept
apart, in ``Volume.dicom_reference`` (``core.study.DicomReference``), never in ``metadata``.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from ..errors import FileTooLargeError, UnreadableFileError, UnsupportedInputError
from ..study import DicomFrame, DicomReference
from .dicom import (
    _DICOM_DATA_ERRORS,
    MSG_DEFLATE_DAMAGED,
    _allowed_metadata,
    _attr,
    _check_native_length,
    _clean,
    _dicom_decode_failure_message,
    _ensure_transfer_syntax,
    _image_orientation,
    _image_position,
    _int_attr,
    _number_of_frames,
    _pixel_spacing,
    _refuse_deflate_bomb,
    _require_decoder,
    _require_image,
    _rescaled_values,
    _uid,
    dicom_reference,
)
from .nifti import GZIP_MAGIC, gunzip_head, is_nifti, load_nifti
from .volume import Volume, check_voxel_count, to_canonical

MAX_SERIES_FILES = 5000  # files in one upload, zip or folder
MAX_SERIES_BYTES = 1024**3  # their total (uncompressed) size: a zip bomb cannot take the memory
MAX_AXIAL_DEG = 20.0  # slice normal vs the patient's z axis; above: a coronal, sagittal or oblique series
OBLIQUE_WARNING_DEG = 5.0
MAX_TILT_DEG = 0.5  # slices stacked at an angle to their normal (gantry tilt): refused above this
ORIENTATION_TOLERANCE = 1e-3  # direction cosines equal within this
SPACING_TOLERANCE = 0.05  # a step may differ from the median step by 5 % (positions are rounded in files)
GAP_FACTOR = 1.5  # a step this many median steps long means missing slices
IGNORED_NAMES = {"dicomdir", ".ds_store", "thumbs.db", "desktop.ini"}


@dataclass
class _Slice:
    """Where one slice (a file, or a frame of a multi-frame file) lies; compared, never shown."""
    source: int  # index of the file, or of the frame
    position: np.ndarray  # ImagePositionPatient (mm, LPS)
    orientation: np.ndarray  # ImageOrientationPatient: row then column direction cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    shape: tuple[int, int]  # (rows, columns)
    series: str | None = None  # SeriesInstanceUID
    modality: str | None = None


@dataclass
class _Stack:
    order: list[int]  # ``_Slice.source`` of each slice, inferior to superior along the normal
    affine: np.ndarray  # RAS+ affine of the voxel grid (column, row, slice in ``order``)
    warnings: list[str]
    step: float = 0.0  # slice spacing along the normal (mm)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_dicom_series(files: list[bytes]) -> Volume:
    """A ``Volume`` from the DICOM files of one series (any order), or from one Enhanced CT multi-frame file."""
    if not files:
        raise UnreadableFileError("No DICOM file was given.")
    if len(files) > MAX_SERIES_FILES:
        raise FileTooLargeError(f"{len(files)} files were given; the limit is {MAX_SERIES_FILES} files per series.")
    headers = [_read_header(data, number, len(files)) for number, data in enumerate(files, start=1)]
    frames = [_number_of_frames(ds) for ds in headers]
    if len(files) == 1 and frames[0] > 1:
        return _load_enhanced(files[0], headers[0], frames[0])
    if max(frames) > 1:
        raise UnsupportedInputError(
            "A multi-frame DICOM file is mixed with other files. Upload the multi-frame file on its own, "
            "or the single-slice files of one series."
        )
    slices = [_slice_from_header(ds, index, len(files)) for index, ds in enumerate(headers)]
    _check_one_series(slices)
    check_voxel_count((len(slices), *slices[0].shape), "The series")
    stack = _stack(slices, _float_or_none(_attr(headers[0], "SliceThickness")))

    first = _read_full(files[stack.order[0]])
    values = np.empty((len(slices), *slices[0].shape), dtype=np.float32)
    for k, index in enumerate(stack.order):
        ds = first if k == 0 else _read_full(files[index])
        values[k] = _slice_values(ds, k + 1, len(slices))
    frames = [DicomFrame(_uid(headers[i], "SOPInstanceUID"), None, _image_position(headers[i])) for i in stack.order]
    reference = dicom_reference(first, frames, fallback_thickness_mm=stack.step)
    return _volume(values, stack, first, "dicom-series", reference)


def load_zip(data: bytes) -> Volume:
    """A ``Volume`` from a .zip holding the DICOM files of one series, or one NIfTI file."""
    return load_files(_zip_members(data), "The zip archive")


def load_files(blobs: list[bytes], where: str) -> Volume:
    """The files of a zip or a folder: one NIfTI volume, or the DICOM files of one series; other files ignored."""
    kinds = [sniff_volume_file(blob) for blob in blobs]
    niftis = [blob for blob, kind in zip(blobs, kinds) if kind == "nifti"]
    dicoms = [blob for blob, kind in zip(blobs, kinds) if kind == "dicom"]
    if len(niftis) > 1 or (niftis and dicoms):
        raise UnsupportedInputError(
            f"{where} holds several volumes ({len(niftis)} NIfTI files and {len(dicoms)} DICOM files). "
            "Upload one volume at a time: one NIfTI file, or the DICOM files of one series."
        )
    if niftis:
        volume = load_nifti(niftis[0])
    elif dicoms:
        volume = load_dicom_series(dicoms)
    else:
        raise UnreadableFileError(f"{where} holds no DICOM or NIfTI file. Upload the files of one CT series.")
    ignored = len(blobs) - len(niftis) - len(dicoms)
    if ignored:
        volume.warnings.append(f"{ignored} file(s) that are neither DICOM nor NIfTI were ignored.")
    return volume


def sniff_volume_file(data: bytes) -> str | None:
    """"zip", "nifti", "gzip" (not NIfTI), "dicom" or None, from the content alone."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:2] == GZIP_MAGIC:
        return "nifti" if is_nifti(gunzip_head(data)) else "gzip"
    if is_nifti(data[:540]):
        return "nifti"
    if data[128:132] == b"DICM" or _is_headerless_dicom(data):
        return "dicom"
    return None


# --------------------------------------------------------------------------------------------------
# Headers and geometry
# --------------------------------------------------------------------------------------------------


def _read_header(data: bytes, number: int, total: int) -> Dataset:
    """The dataset without its pixel data (nothing is decoded yet)."""
    if not data:
        raise UnreadableFileError(f"File {number} of {total} is empty (0 bytes).")
    _refuse_deflate_bomb(data)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM", stop_before_pixels=True)
    except zlib.error as exc:
        raise UnreadableFileError(MSG_DEFLATE_DAMAGED) from exc
    except _DICOM_DATA_ERRORS as exc:
        raise UnreadableFileError(
            f"File {number} of {total} is not a readable DICOM file: it is damaged or truncated."
        ) from exc
    if not (_attr(ds, "Rows") and _attr(ds, "Columns")):
        raise UnreadableFileError(
            f"File {number} of {total} is not a DICOM image (no image size in its header). "
            "Upload only the image files of the series."
        )
    return ds


def _is_headerless_dicom(data: bytes) -> bool:
    """DICOM written without the 128-byte preamble: only when pydicom finds an image header in it."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        return bool(_attr(ds, "Rows") and _attr(ds, "Columns") and _attr(ds, "SOPClassUID"))
    except (*_DICOM_DATA_ERRORS, zlib.error):
        return False


def _position(value) -> np.ndarray | None:
    try:
        numbers = np.array([float(v) for v in value], dtype=float) if value is not None else np.empty(0)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (3,) and np.isfinite(numbers).all() else None


def _slice_from_header(ds: Dataset, index: int, total: int) -> _Slice:
    orientation = _image_orientation(ds)
    position = _position(_attr(ds, "ImagePositionPatient"))
    spacing = _pixel_spacing(ds)
    if orientation is None or position is None or spacing is None:
        missing = [name for name, value in (("Image Orientation (Patient)", orientation),
                                            ("Image Position (Patient)", position), ("Pixel Spacing", spacing))
                   if value is None]
        raise UnsupportedInputError(
            f"File {index + 1} of {total} does not give its {' and '.join(missing)}, so the slices cannot be "
            "stacked into a volume. Upload the series as exported by the scanner (not secondary captures)."
        )
    return _Slice(
        source=index,
        position=position,
        orientation=np.asarray(orientation, dtype=float),
        pixel_spacing=spacing,
        shape=(_int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0)),
        series=str(_attr(ds, "SeriesInstanceUID") or "").strip() or None,
        modality=_clean("Modality", _attr(ds, "Modality")),
    )


def _check_one_series(slices: list[_Slice]) -> None:
    series = [s.series for s in slices if s.series]
    if len(set(series)) > 1:
        counts = sorted((series.count(uid) for uid in set(series)), reverse=True)
        raise UnsupportedInputError(
            f"The files come from {len(counts)} different series ({', '.join(map(str, counts))} files). "
            "Upload the files of one series only (one reconstruction, e.g. the lung kernel or the soft-tissue "
            "kernel, not both)."
        )
    if len({s.modality for s in slices}) > 1:
        raise UnsupportedInputError("The files are of different modalities: they are not one series.")
    if len({s.shape for s in slices}) > 1:
        raise UnsupportedInputError("The slices have different image sizes (rows x columns): they are not one series.")
    if any(np.abs(s.orientation - slices[0].orientation).max() > ORIENTATION_TOLERANCE for s in slices):
        raise UnsupportedInputError(
            "The slices have different orientations (Image Orientation (Patient) differs): they are not one "
            "stack of parallel slices. Upload one series only."
        )
    if any(np.abs(np.subtract(s.pixel_spacing, slices[0].pixel_spacing)).max() > 1e-3 for s in slices):
        raise UnsupportedInputError("The slices have different pixel spacings: they are not one series.")


def _stack(slices: list[_Slice], thickness_mm: float | None = None) -> _Stack:
    """Sort along the slice normal and check the stack: axial, no tilt, no duplicates, no gaps, even steps."""
    row, column = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row, column)
    if np.linalg.norm(normal) < 1e-3:
        raise UnsupportedInputError("The slices' Image Orientation (Patient) is invalid: the series cannot be stacked.")
    normal /= np.linalg.norm(normal)
    warnings: list[str] = []
    _check_axial(normal, warnings)

    along = np.array([s.position @ normal for s in slices])
    order = np.argsort(along, kind="stable")
    along = along[order]
    positions = np.array([slices[i].position for i in order])
    n = len(slices)
    if n == 1:
        step = thickness_mm or 1.0
        warnings.append("The series has a single slice, so its slice thickness is not known.")
    else:
        step = _check_steps(np.diff(along), n)
        _check_tilt(positions - positions[0], along - along[0], normal)

    dr, dc = slices[0].pixel_spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row * dc, column * dr, normal * step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS world -> NIfTI's RAS world
    return _Stack(order=[slices[i].source for i in order], affine=affine, warnings=warnings, step=float(step))


def _check_axial(normal: np.ndarray, warnings: list[str]) -> None:
    angle = float(np.degrees(np.arccos(np.clip(abs(normal[2]), 0.0, 1.0))))
    if angle > MAX_AXIAL_DEG:
        plane = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]
        name = plane if abs(np.abs(normal).max() - 1) < 0.05 else "oblique"
        raise UnsupportedInputError(
            f"This is a {name} series ({angle:.0f} degrees from axial); the CT volume page analyses axial series, "
            "as the models were trained on. Upload the axial series of the examination."
        )
    if angle > OBLIQUE_WARNING_DEG:
        warnings.append(
            f"The slices are {angle:.0f} degrees from the axial plane; they are shown and analysed as axial slices."
        )


def _check_steps(steps: np.ndarray, n: int) -> float:
    """The slice spacing (mm); refuse duplicates, gaps and uneven spacing, naming the slices (1-based, sorted)."""
    positive = steps[steps > 0.01]
    step = float(np.median(positive)) if positive.size else 0.0
    duplicates = np.flatnonzero(steps <= max(0.01, 0.05 * step))
    if duplicates.size:
        k = int(duplicates[0])
        raise UnsupportedInputError(
            f"Slices {k + 1} and {k + 2} of {n} (sorted from feet to head) lie at the same position: the upload "
            f"holds {duplicates.size} duplicate slice(s) (a file given twice, or two series mixed). "
            "Upload each slice of one series once."
        )
    gaps = np.flatnonzero(steps > GAP_FACTOR * step)
    if gaps.size:
        missing = round(float(np.sum(steps[gaps] / step - 1)))
        where = ", ".join(f"between slices {k + 1} and {k + 2}" for k in gaps[:3]) + (" ..." if gaps.size > 3 else "")
        raise UnsupportedInputError(
            f"Slices are missing: a gap {where} of {n} (sorted from feet to head), about {missing} slice(s) "
            f"in all. Upload every file of the series."
        )
    if np.abs(steps - step).max() > max(SPACING_TOLERANCE * step, 0.01):
        raise UnsupportedInputError(
            f"The slice spacing is not constant (from {steps.min():.2f} to {steps.max():.2f} mm between "
            "neighbouring slices), so the slices do not form a regular volume. Upload a series reconstructed "
            "at one slice interval."
        )
    return step


def _check_tilt(offsets: np.ndarray, along: np.ndarray, normal: np.ndarray) -> None:
    """Positions must run along the normal; a gantry-tilted stack drifts sideways as it goes."""
    sideways = offsets - np.outer(along, normal)
    angle = float(np.degrees(np.arctan2(np.linalg.norm(sideways[-1]), along[-1])))
    if angle > MAX_TILT_DEG:
        raise UnsupportedInputError(
            f"The series was acquired with a gantry tilt of about {angle:.1f} degrees (the slices are stacked "
            "at an angle to their plane). This app cannot handle tilted acquisitions: upload a series "
            "reconstructed without tilt (most scanners and PACS can resample it) or a NIfTI volume."
        )


# --------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------


def _read_full(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (*_DICOM_DATA_ERRORS, zlib.error) as exc:  # read once already: only a changing file gets here
        raise UnreadableFileError("A DICOM file of the series cannot be read: it is damaged.") from exc
    _require_image(ds)
    _ensure_transfer_syntax(ds)
    _require_decoder(UID(ds.file_meta.TransferSyntaxUID))
    return ds


def _decode(ds: Dataset, frames: int) -> np.ndarray:
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if not transfer_syntax.is_encapsulated:
        _check_native_length(ds, _int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0), frames)
    photometric = str(_attr(ds, "PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"} or _int_attr(ds, "SamplesPerPixel", 1) != 1:
        raise UnsupportedInputError(
            "The series holds colour images (screen captures or exports), not CT slices in Hounsfield units. "
            "Upload the CT series as exported by the scanner."
        )
    try:
        return ds.pixel_array
    except _DICOM_DATA_ERRORS as exc:
        raise UnreadableFileError(_dicom_decode_failure_message(transfer_syntax)) from exc


def _slice_values(ds: Dataset, number: int, total: int) -> np.ndarray:
    values = _rescaled_values(_decode(ds, 1), ds)
    if values is None:
        raise UnreadableFileError(
            f"Slice {number} of {total} has invalid rescale values (Rescale Slope / Intercept): the file is damaged."
        )
    return values


def _volume(values: np.ndarray, stack: _Stack, ds: Dataset, file_format: str, reference: DicomReference) -> Volume:
    """``values`` is [slice in stack order, row, column]; the source grid is (column, row, slice)."""
    source_voxels = np.transpose(values, (2, 1, 0))
    canonical, ornt, spacing = to_canonical(source_voxels, stack.affine)
    metadata = _allowed_metadata(ds)
    warnings = list(stack.warnings)
    if metadata.get("BurnedInAnnotation") == "YES":
        warnings.append(
            "The files state that text is burned into the images (Burned In Annotation = YES): identifying "
            "details may be visible in the pixels. Check the images before sharing or exporting them."
        )
    if metadata.get("LossyImageCompression") == "01":
        warnings.append("The images were compressed lossily: Hounsfield units are approximate.")
    return Volume(
        hu=np.asarray(canonical, dtype=np.float32),
        spacing_mm=spacing,
        file_format=file_format,
        source_affine=stack.affine,
        source_shape=tuple(int(n) for n in source_voxels.shape),
        source_ornt=ornt,
        modality=metadata.get("Modality"),
        metadata=metadata,
        warnings=warnings,
        dicom_reference=reference,
    )


# --------------------------------------------------------------------------------------------------
# Enhanced CT: one multi-frame file
# --------------------------------------------------------------------------------------------------


def _functional_group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The item of ``sequence`` for one frame: per-frame first, else shared (PS3.3 C.7.6.16)."""
    for keyword, item in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        try:
            groups = ds.get(keyword)
            found = groups[item].get(sequence) if groups is not None and len(groups) > item else None
            if found:
                return found[0]
        except _DICOM_DATA_ERRORS:
            return None
    return None


def _enhanced_slices(ds: Dataset, frames: int) -> list[_Slice]:
    slices = []
    for frame in range(frames):
        plane = _functional_group(ds, frame, "PlanePositionSequence")
        orientation = _functional_group(ds, frame, "PlaneOrientationSequence")
        measures = _functional_group(ds, frame, "PixelMeasuresSequence")
        position = _position(_attr(plane, "ImagePositionPatient")) if plane is not None else None
        cosines = _image_orientation(orientation) if orientation is not None else None
        spacing = _pixel_spacing(measures) if measures is not None else None
        if position is None or cosines is None or spacing is None:
            raise UnsupportedInputError(
                "The multi-frame DICOM file does not give the position, orientation and pixel spacing of each "
                "frame, so its frames cannot be stacked into a volume. Export the series as single-slice files."
            )
        shape = (_int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0))
        slices.append(_Slice(frame, position, np.asarray(cosines, dtype=float), spacing, shape))
    return slices


def _frame_rescale(ds: Dataset, frame: int) -> tuple[float, float]:
    item = _functional_group(ds, frame, "PixelValueTransformationSequence") or ds
    try:
        return float(_attr(item, "RescaleSlope") or 1.0), float(_attr(item, "RescaleIntercept") or 0.0)
    except (TypeError, ValueError) as exc:
        raise UnreadableFileError("The multi-frame file has invalid rescale values: it is damaged.") from exc


def _load_enhanced(data: bytes, header: Dataset, frames: int) -> Volume:
    shape = (frames, _int_attr(header, "Rows", 0), _int_attr(header, "Columns", 0))
    check_voxel_count(shape, "The multi-frame file")
    slices = _enhanced_slices(header, frames)
    _check_one_series(slices)
    thickness = _functional_group(header, 0, "PixelMeasuresSequence")
    stack = _stack(slices, _float_or_none(_attr(thickness, "SliceThickness")) if thickness is not None else None)
    ds = _read_full(data)
    stored = _decode(ds, frames).reshape(shape)
    values = np.empty(shape, dtype=np.float32)
    for k, frame in enumerate(stack.order):
        slope, intercept = _frame_rescale(ds, frame)
        values[k] = stored[frame].astype(np.float32) * slope + intercept
    sop_instance = _uid(header, "SOPInstanceUID")
    frames = [DicomFrame(sop_instance, index + 1, tuple(float(v) for v in slices[index].position))
              for index in stack.order]
    reference = dicom_reference(header, frames, multi_frame=True, fallback_thickness_mm=stack.step,
                                geometry=_shared_geometry(header))
    return _volume(values, stack, ds, "dicom-enhanced", reference)


def _shared_geometry(ds: Dataset) -> Dataset:
    """PixelSpacing, ImageOrientationPatient and SliceThickness of frame 1, gathered from its functional groups."""
    geometry = Dataset()
    measures = _functional_group(ds, 0, "PixelMeasuresSequence")
    orientation = _functional_group(ds, 0, "PlaneOrientationSequence")
    for item, keywords in ((measures, ("PixelSpacing", "SliceThickness")), (orientation, ("ImageOrientationPatient",))):
        for keyword in keywords:
            value = _attr(item, keyword) if item is not None else None
            if value is not None:
                setattr(geometry, keyword, value)
    return geometry


def _float_or_none(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Zip archives
# --------------------------------------------------------------------------------------------------


def _zip_members(data: bytes) -> list[bytes]:
    """The regular files of a zip (not __MACOSX, DICOMDIR or hidden files), within the count and size caps."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [info for info in archive.infolist() if not info.is_dir() and not is_ignored_name(info.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise UnreadableFileError("The zip archive cannot be opened: it is damaged or truncated.") from exc
    if len(infos) > MAX_SERIES_FILES:
        raise FileTooLargeError(
            f"The zip archive holds {len(infos)} files; the limit is {MAX_SERIES_FILES}. Zip one series only."
        )
    members, total = [], 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsupportedInputError("The zip archive is encrypted. Upload an archive without a password.")
        try:
            with archive.open(info) as member:  # read with a cap: the sizes in the directory may lie
                blob = member.read(MAX_SERIES_BYTES - total + 1)
        except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError, EOFError, zlib.error) as exc:
            raise UnreadableFileError("A file in the zip archive cannot be extracted: the archive is damaged.") from exc
        total += len(blob)
        if total > MAX_SERIES_BYTES:
            raise FileTooLargeError(
                f"The zip archive expands to more than {MAX_SERIES_BYTES // 2**20} MB: too large to analyse "
                "(or deliberately malformed). Zip one series only."
            )
        members.append(blob)
    return members


def is_ignored_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return (not parts or "__MACOSX" in parts or parts[-1].lower() in IGNORED_NAMES
            or parts[-1].startswith("."))


# --------------------------------------------------------------------------------------------------
# Writer (tests and demos)
# --------------------------------------------------------------------------------------------------

FAKE_IDENTITY = {  # obviously fake: tests check that none of it ever leaves the loader
    "PatientName": "SYNTHETIC^PHANTOM",
    "PatientID": "SYNTHETIC-0000",
    "PatientBirthDate": "19000101",
    "InstitutionName": "NOT A HOSPITAL",
    "AccessionNumber": "SYNTH0000",
    "StudyDescription": "SYNTHETIC CHEST PHANTOM",
}


def dicom_series_bytes(canonical_hu: np.ndarray, spacing_mm, *, shuffle_seed: int | None = None,
                       transfer_syntax=ExplicitVRLittleEndian, drop_slices=(), series_count: int = 1,
                       tilt_deg: float = 0.0, modality: str = "CT", enhanced: bool = False) -> list[bytes]:
    """DICOM files of a canonical ``[z, y, x]`` HU array (12-bit stored values, intercept -1024).

    One file per axial slice (or one Enhanced CT file with ``enhanced``), real-looking geometry centred
    on the world origin, InstanceNumber running from head to feet as scanners number them.
    Args:
        shuffle_seed: shuffle the order of the files.
        transfer_syntax: e.g. ``JPEG2000Lossless`` or ``RLELossless`` (compressed by pydicom).
        drop_slices: canonical z indices left out (a series with missing slices).
        series_count: > 1 mixes in further series of the same slices (other SeriesInstanceUIDs).
        tilt_deg: gantry tilt: the image plane is tilted, the positions still move along z.
    """
    stored = (np.clip(np.rint(canonical_hu), -1024, 3071) + 1024).astype(np.uint16)
    n_slices = stored.shape[0]
    keep = [k for k in range(n_slices) if k not in set(drop_slices)]
    files = []
    for series in range(series_count):
        uid = _uid_maker(stored.shape, series)
        if enhanced:
            files.append(_to_bytes(_enhanced_dataset(stored, keep, spacing_mm, tilt_deg, modality, uid), transfer_syntax))
            continue
        for k in keep:
            ds = _slice_dataset(stored[k], k, n_slices, spacing_mm, tilt_deg, modality, uid)
            files.append(_to_bytes(ds, transfer_syntax))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(files)
    return files


def _uid_maker(shape, series: int):
    """Deterministic UIDs under pydicom's root, so the same arguments give the same bytes."""
    return lambda *parts: generate_uid(entropy_srcs=["chest-review synthetic", repr(shape), str(series), *map(str, parts)])


def _geometry(k: int, shape_zyx, spacing_mm, tilt_deg: float) -> tuple[list[float], list[float]]:
    """(ImagePositionPatient, ImageOrientationPatient) of canonical slice ``k``, the volume centred on 0."""
    dz, dy, dx = (float(s) for s in spacing_mm)
    nz, ny, nx = shape_zyx
    tilt = np.radians(tilt_deg)
    position = [-(nx - 1) / 2 * dx, -(ny - 1) / 2 * dy, (k - (nz - 1) / 2) * dz]
    orientation = [1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt))]
    return [round(v, 4) for v in position], [round(v, 6) for v in orientation]


def _base_dataset(modality: str, uid, sop_class) -> Dataset:
    ds = Dataset()
    ds.update({keyword: value for keyword, value in FAKE_IDENTITY.items()})
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = uid("study"), uid("frame of reference")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality, ds.Manufacturer, ds.BodyPartExamined = modality, "SYNTHETIC", "CHEST"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _slice_dataset(pixels: np.ndarray, k: int, n_slices: int, spacing_mm, tilt_deg, modality, uid) -> Dataset:
    ds = _base_dataset(modality, uid, CTImageStorage)
    ds.SOPInstanceUID = uid("slice", k)
    ds.InstanceNumber = n_slices - k  # head to feet
    position, orientation = _geometry(k, (n_slices, *pixels.shape), spacing_mm, tilt_deg)
    ds.ImagePositionPatient, ds.ImageOrientationPatient = position, orientation
    ds.SliceLocation = position[2]
    ds.PixelSpacing = [float(spacing_mm[1]), float(spacing_mm[2])]
    ds.SliceThickness = float(spacing_mm[0])
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _enhanced_dataset(stored: np.ndarray, keep: list[int], spacing_mm, tilt_deg, modality, uid) -> Dataset:
    ds = _base_dataset(modality, uid, EnhancedCTImageStorage)
    ds.SOPInstanceUID = uid("enhanced")
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(keep), stored.shape[1:]
    _, orientation = _geometry(0, stored.shape, spacing_mm, tilt_deg)
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = orientation
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [float(spacing_mm[1]), float(spacing_mm[2])]
    shared.PixelMeasuresSequence[0].SliceThickness = float(spacing_mm[0])
    shared.PixelValueTransformationSequence = [Dataset()]
    transform = shared.PixelValueTransformationSequence[0]
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = list(reversed(keep))  # head to feet, as scanners store them
    per_frame = []
    for k in frames:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = _geometry(k, stored.shape, spacing_mm, tilt_deg)[0]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.ascontiguousarray(stored[frames]).tobytes()
    return ds


def _to_bytes(ds: Dataset, transfer_syntax) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax.is_encapsulated:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
