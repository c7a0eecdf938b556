"""One DICOM file into a ``Study``: decoding, the display pipeline, Hounsfield units, de-identification."""

from __future__ import annotations

import io
import math
import re
import struct
import zlib

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..errors import FileTooLargeError, UnreadableFileError
from ..imaging.hounsfield import PADDING_HU, looks_like_hu
from ..imaging.windowing import LUNG, apply_window
from ..study import DicomFrame, DicomReference, Study
from .images import _LUMA, MAX_PIXELS, MSG_TRUNCATED, _finalise, _min_max, _scale, _too_many_pixels_message

# pydicom's validation warnings quote raw attribute values (possibly identifiers) into the logs.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


MAX_INFLATED_BYTES = 512 * 1024 * 1024  # a deflated DICOM dataset may inflate to this much, no more

# Which pip packages decode which compressed transfer syntaxes (named in the error when missing).
DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Lossless, Process 14
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg and pylibjpeg-libjpeg (or pyjpegls)",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg and pylibjpeg-libjpeg (or pyjpegls)",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle (or numpy only)",  # RLE Lossless
}
DEFAULT_DECODER_PACKAGE = "python-gdcm"

# DICOM attributes allowed to leave the loader, with the pattern their value must match.
# None of them appears in PS3.15 Annex E (checked against Table E.1-1): no Patient*, dates, times,
# UIDs, institution, device serial number, station, physicians, operators, descriptions or comments.
_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")  # DICOM Code String
_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z0-9 .,_()/+&-]{1,64}")  # manufacturer / model: plain words only
DICOM_ALLOWED_ATTRIBUTES: dict[str, re.Pattern[str]] = {
    "Modality": _CODE,
    "ViewPosition": _CODE,
    "BodyPartExamined": _CODE,
    "PresentationIntentType": _CODE,
    "PhotometricInterpretation": _CODE,
    "BurnedInAnnotation": _CODE,
    "LossyImageCompression": _CODE,
    "Rows": _NUMBER,
    "Columns": _NUMBER,
    "SamplesPerPixel": _NUMBER,
    "BitsAllocated": _NUMBER,
    "BitsStored": _NUMBER,
    "PixelRepresentation": _NUMBER,
    "NumberOfFrames": _NUMBER,
    "PixelSpacing": _NUMBER,
    "ImagerPixelSpacing": _NUMBER,
    "RescaleSlope": _NUMBER,
    "RescaleIntercept": _NUMBER,
    "WindowCenter": _NUMBER,
    "WindowWidth": _NUMBER,
    "RescaleType": _CODE,  # "HU" on CT
    "ImageOrientationPatient": _NUMBER,  # slice plane direction cosines: geometry, not identifying
    "Manufacturer": _NAME,
    "ManufacturerModelName": _NAME,
}

# Exceptions pydicom raises on malformed data: it has no common base class for them, and fuzzing
# shows TypeError and struct.error escaping from its readers and decoders, and zlib.error from the
# file reader when a Deflated Explicit VR Little Endian dataset does not inflate. Only library calls
# are wrapped with these tuples, never this module's own arithmetic.
_DICOM_DATA_ERRORS = (
    InvalidDicomError, BytesLengthException, ValueError, TypeError, KeyError, IndexError, AttributeError,
    NotImplementedError, RuntimeError, EOFError, OSError, OverflowError, struct.error, zlib.error,
)
MSG_DEFLATE_DAMAGED = ("The DICOM file is deflate-compressed and its compressed data is damaged or truncated: "
                       "it cannot be decompressed. Upload the complete, original file.")



# --------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------


# Explicit VR with a 4-byte length (PS3.5 7.1.2); every other VR has a 2-byte length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _dataset_start(data: bytes) -> int:
    """Offset just after the file meta group (0002,xxxx), which is always explicit VR little endian."""
    position = 132 if data[128:132] == b"DICM" else 0
    while position + 8 <= len(data) and data[position:position + 2] == b"\x02\x00":
        vr = data[position + 4:position + 6]
        if vr in _LONG_VRS:
            position += 12 + int.from_bytes(data[position + 8:position + 12], "little")
        else:
            position += 8 + int.from_bytes(data[position + 6:position + 8], "little")
    return position


def _refuse_deflate_bomb(data: bytes) -> None:
    """pydicom inflates a deflated dataset in one go, however large: measure it first, up to a cap.

    A few megabytes of deflated zeros inflate to gigabytes and would take the server's memory.
    """
    if bytes(DeflatedExplicitVRLittleEndian, "ascii") not in data[:4096]:
        return
    try:
        inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[_dataset_start(data):], MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise UnreadableFileError(MSG_DEFLATE_DAMAGED) from exc
    if len(inflated) > MAX_INFLATED_BYTES:
        raise FileTooLargeError(
            f"The DICOM file is deflate-compressed and would expand to more than {MAX_INFLATED_BYTES // 2**20} MB: "
            "it is too large to analyse (or deliberately malformed). Export the image uncompressed or as JPEG 2000."
        )


def _read_dicom(data: bytes, *, force: bool) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=force)
    except zlib.error as exc:  # a deflate-compressed dataset (transfer syntax 1.2.840.10008.1.2.1.99)
        raise UnreadableFileError(MSG_DEFLATE_DAMAGED) from exc
    except _DICOM_DATA_ERRORS as exc:
        raise UnreadableFileError(
            "The file is marked as DICOM but its header cannot be read: it is damaged or truncated. "
            "Upload the complete, original file."
        ) from exc


def _try_read_headerless_dicom(data: bytes) -> Dataset | None:
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        looks_like_image = "PixelData" in dataset and _attr(dataset, "Rows") and _attr(dataset, "Columns")
    except zlib.error as exc:  # only after a file meta group declaring the deflated transfer syntax: DICOM
        raise UnreadableFileError(MSG_DEFLATE_DAMAGED) from exc
    except _DICOM_DATA_ERRORS:
        return None  # not DICOM either; the caller says the file is not recognised
    return dataset if looks_like_image else None


def _attr(ds: Dataset, keyword: str):
    """The value of ``keyword``, or None when absent, empty or malformed in the file."""
    try:
        value = ds.get(keyword)
    except _DICOM_DATA_ERRORS:
        return None
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    return value


def _load_dicom(ds: Dataset) -> Study:
    warnings: list[str] = []
    _require_image(ds)
    _ensure_transfer_syntax(ds)
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    _require_decoder(transfer_syntax)

    rows, columns = _int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0)
    if rows < 1 or columns < 1:
        raise UnreadableFileError("The DICOM file declares an image with no rows or columns: it is damaged.")
    if rows * columns > MAX_PIXELS:
        raise FileTooLargeError(_too_many_pixels_message(columns, rows))

    frames = _number_of_frames(ds)
    if frames > 1:
        warnings.append(f"This DICOM file holds {frames} frames; only the first one is shown and analysed.")
    if not transfer_syntax.is_encapsulated:
        _check_native_length(ds, rows, columns, frames)

    ds.pixel_array_options(index=0)  # decode the first frame only
    try:
        stored = ds.pixel_array
    except _DICOM_DATA_ERRORS as exc:
        raise UnreadableFileError(_dicom_decode_failure_message(transfer_syntax)) from exc
    if stored.ndim == 3 and stored.shape[-1] == 1:
        stored = stored[..., 0]

    photometric = str(_attr(ds, "PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    hu = _hounsfield_units(stored, ds, photometric)
    if hu is not None:  # CT: shown in the lung window; the guard and the models read ``hu``
        pixels = apply_window(hu, LUNG)
    elif _is_ct_display_export(stored, ds, photometric):
        pixels = _display_export(stored, photometric)
    elif stored.ndim == 2 and photometric in {"MONOCHROME1", "MONOCHROME2"}:
        pixels, note = _monochrome_display(stored, ds)
        if note:
            warnings.append(note)
        if photometric == "MONOCHROME1":  # after windowing, so that bone ends up bright
            pixels = 1.0 - pixels
    else:
        pixels = _colour_dicom_to_grey(stored, ds, photometric)

    if str(_attr(ds, "BurnedInAnnotation") or "").strip().upper() == "YES":
        burned_in = True
        warnings.append(
            "The file states that text is burned into the image (Burned In Annotation = YES): "
            "identifying details such as a name, ID or date may be visible in the pixels. "
            "Check the image before sharing or exporting it."
        )
    else:
        burned_in = False

    metadata = _allowed_metadata(ds)
    return Study(
        pixels=_finalise(pixels),
        file_format="dicom",
        modality=metadata.get("Modality"),
        view=metadata.get("ViewPosition"),
        body_part=metadata.get("BodyPartExamined"),
        burned_in_annotation=burned_in,
        pixel_spacing_mm=_pixel_spacing(ds),
        metadata=metadata,
        warnings=warnings,
        hu=hu,
        frames=frames,
        image_orientation=_image_orientation(ds),
        dicom_reference=dicom_reference(ds, [DicomFrame(_uid(ds, "SOPInstanceUID"), None, _image_position(ds))],
                                        multi_frame=frames > 1),
    )


def _require_image(ds: Dataset) -> None:
    """Refuse DICOM objects without pixel data: reports, documents, presentation states, truncated files."""
    if "PixelData" in ds:
        return
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnreadableFileError(
            "This DICOM file stores floating-point pixels (a parametric map), not a radiograph."
        )
    sop_class = _standard_uid_name(_attr(ds, "SOPClassUID"))
    image_class = sop_class is not None and "Image" in sop_class and "Storage" in sop_class
    if len(ds) == 0 or image_class or (_attr(ds, "Rows") and _attr(ds, "Columns")):
        raise UnreadableFileError(
            "The DICOM file describes an image but the image data is missing: the file ends early "
            "and looks truncated. Upload the complete file."
        )
    modality = _clean("Modality", _attr(ds, "Modality"))
    if sop_class:
        what = f"a '{sop_class}' object"
    elif modality == "SR":
        what = "a structured report"
    else:
        what = "not an image (or its image data is missing)"
    raise UnreadableFileError(
        f"This DICOM file contains no image: it is {what}. Upload the DICOM image itself."
    )


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files without a file meta header (read with force=True) get the syntax they were parsed with."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and _attr(file_meta, "TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        raise UnreadableFileError(
            "The DICOM file has no transfer syntax and its encoding cannot be inferred: it is damaged."
        )
    if file_meta is None:
        ds.file_meta = FileMetaDataset()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _require_decoder(transfer_syntax: UID) -> None:
    name = _standard_uid_name(transfer_syntax)
    if name is None or not transfer_syntax.is_transfer_syntax:
        raise UnreadableFileError(
            "The DICOM file declares an unknown or private transfer syntax, so its image cannot be decoded. "
            "Export it uncompressed or as JPEG 2000."
        )
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise UnreadableFileError(
            f"The DICOM image is encoded as '{name}', which this app cannot decode. "
            "Export it uncompressed or as JPEG 2000."
        ) from exc
    if not decoder.is_available:
        package = DECODER_PACKAGES.get(str(transfer_syntax), DEFAULT_DECODER_PACKAGE)
        raise UnreadableFileError(
            f"The DICOM image is compressed as '{name}' ({transfer_syntax}) and no decoder for it is "
            f"installed on this server. Ask the administrator to install {package} "
            f"(pip install {package.split(' (')[0].replace(' and ', ' ')})."
        )


def _int_attr(ds: Dataset, keyword: str, default: int) -> int:
    value = _attr(ds, keyword)
    try:
        return default if value is None else int(value)
    except (TypeError, ValueError):
        return default


def _number_of_frames(ds: Dataset) -> int:
    return max(1, _int_attr(ds, "NumberOfFrames", 1))


def _check_native_length(ds: Dataset, rows: int, columns: int, frames: int) -> None:
    """An uncompressed first frame must be complete; pydicom would only say 'less than expected'."""
    bits = _int_attr(ds, "BitsAllocated", 0)
    samples = _int_attr(ds, "SamplesPerPixel", 1)
    if bits not in {1, 8, 16, 32, 64}:
        raise UnreadableFileError(
            f"The DICOM header declares {bits} bits allocated per pixel, which is not valid: the file is damaged."
        )
    photometric = str(_attr(ds, "PhotometricInterpretation") or "").strip().upper()
    per_pixel = samples * bits / 8
    if photometric == "YBR_FULL_422":
        per_pixel = 2 * bits / 8
    needed = math.ceil(rows * columns * per_pixel)
    try:
        available = len(ds.PixelData)
    except _DICOM_DATA_ERRORS as exc:
        raise UnreadableFileError(MSG_TRUNCATED) from exc
    if available < needed:
        raise UnreadableFileError(MSG_TRUNCATED)


def _dicom_decode_failure_message(transfer_syntax: UID) -> str:
    if transfer_syntax.is_encapsulated:
        return (
            f"The compressed DICOM image ({transfer_syntax.name}) cannot be decoded: the image data is "
            "damaged or truncated. Upload the complete, original file."
        )
    return (
        "The DICOM image data cannot be decoded: its header and pixel data do not match. "
        "The file is damaged; upload the original file."
    )


def _monochrome_display(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str | None]:
    """Modality LUT (rescale), then VOI LUT or window, then [0, 1]. Returns (pixels, warning or None)."""
    try:
        values = apply_modality_lut(stored, ds)
    except _DICOM_DATA_ERRORS:
        return _min_max(stored), "The file's rescale values are invalid; the stored values are shown instead."

    if _has_voi_lut(ds):
        lut_input = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        try:
            descriptor = ds.VOILUTSequence[0].LUTDescriptor
            entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
            lut_outputs = apply_voi(np.arange(first, first + entries), ds)  # every output of the LUT
            shown = apply_voi(lut_input, ds)
        except _DICOM_DATA_ERRORS:
            return _min_max(values), "The file's VOI LUT is invalid; the full range of values is shown instead."
        return _scale(shown, float(lut_outputs.min()), float(lut_outputs.max())), None

    if _attr(ds, "WindowCenter") is not None and _attr(ds, "WindowWidth") is not None:
        try:
            with np.errstate(over="ignore"):  # SIGMOID at the extremes
                # outputs below and above the window; pydicom swaps them when the rescale slope is negative
                at_low, at_high = apply_windowing(np.array([-1e30, 1e30]), ds)
                shown = apply_windowing(values, ds)
        except _DICOM_DATA_ERRORS:
            return _min_max(values), "The file's display window is invalid; the full range of values is shown instead."
        return _scale(shown, float(at_low), float(at_high)), None

    return _min_max(values), None


# --------------------------------------------------------------------------------------------------
# CT: Hounsfield units
# --------------------------------------------------------------------------------------------------


def _hounsfield_units(stored: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray | None:
    """float32 HU of a CT slice, or None when the file holds no HU (radiographs, 8-bit exports...).

    CT (and, without a Modality tag or with 'OT', values that are plainly HU): the modality LUT
    (RescaleSlope/Intercept) of the stored values, signed or not as PixelRepresentation says;
    padding pixels (PixelPaddingValue, up to PixelPaddingRangeLimit) become air, never tissue.
    A CT file with 8 unsigned bits stored and no (or an identity) rescale is a display export: no HU.
    """
    if stored.ndim != 2 or photometric != "MONOCHROME2" or stored.dtype.kind not in "iu":
        return None
    modality = _clean("Modality", _attr(ds, "Modality"))
    if modality not in (None, "CT", "OT"):
        return None
    if _is_ct_display_export(stored, ds, photometric):
        return None
    signed = _int_attr(ds, "PixelRepresentation", 0) == 1
    if modality != "CT" and not signed and _rescale_is_identity(ds):
        return None  # unsigned values without rescale cannot hold air at -1000 HU
    hu = _rescaled_values(stored, ds)
    if hu is None:
        return None  # the display path reports the invalid rescale
    if modality != "CT" and not looks_like_hu(hu):
        return None
    return hu


def _rescaled_values(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """float32 modality LUT (rescale) of the stored values, padding pixels set to air; None when the rescale is invalid."""
    try:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except _DICOM_DATA_ERRORS:
        return None
    if not np.isfinite(values).all():
        return None
    padding = _padding_mask(stored, ds)
    if padding is not None and padding.any():
        real = values[~padding]
        values[padding] = min(PADDING_HU, float(real.min())) if real.size else PADDING_HU
    return values.astype(np.float32)


def _padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Stored values that are padding (PS3.3 C.7.5.1.1.2): PixelPaddingValue, or the range up to PixelPaddingRangeLimit."""
    bounds = []
    for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        value = _attr(ds, keyword)
        if isinstance(value, (list, tuple, MultiValue)):
            value = value[0] if len(value) else None
        try:
            bounds.append(None if value is None else int(value))
        except (TypeError, ValueError, OverflowError):
            bounds.append(None)
    first, limit = bounds
    if first is None:
        return None
    bits = _int_attr(ds, "BitsAllocated", 16)
    if _int_attr(ds, "PixelRepresentation", 0) == 1 and bits in (8, 16, 32):
        # an SS value read as US (the VR is 'US or SS'): back to two's complement
        first, limit = (v - (1 << bits) if v is not None and v >= 1 << (bits - 1) else v for v in (first, limit))
    low, high = sorted((first, first if limit is None else limit))
    return (stored >= low) & (stored <= high)


def _is_ct_display_export(stored: np.ndarray, ds: Dataset, photometric: str) -> bool:
    """A CT-labelled 8-bit greyscale image without rescale (or slope 1, intercept 0): an exported display, already windowed."""
    return (
        stored.ndim == 2
        and photometric in {"MONOCHROME1", "MONOCHROME2"}
        and _clean("Modality", _attr(ds, "Modality")) == "CT"
        and stored.dtype.kind == "u"
        and _int_attr(ds, "BitsStored", 16) <= 8
        and _rescale_is_identity(ds)
    )


def _rescale_is_identity(ds: Dataset) -> bool:
    """No modality LUT, or RescaleSlope 1 and RescaleIntercept 0 (False when unreadable: the LUT path reports it)."""
    if _attr(ds, "ModalityLUTSequence"):
        return False
    try:
        slope = float(_attr(ds, "RescaleSlope") or 1.0)
        intercept = float(_attr(ds, "RescaleIntercept") or 0.0)
    except (TypeError, ValueError):
        return False
    return slope == 1.0 and intercept == 0.0


def _display_export(stored: np.ndarray, photometric: str) -> np.ndarray:
    """8-bit grey levels as exported (value / 255): the exporter's window, like a PNG of the same slice."""
    pixels = stored.astype(np.float64) / 255.0
    return 1.0 - pixels if photometric == "MONOCHROME1" else pixels


def _image_orientation(ds: Dataset) -> tuple[float, ...] | None:
    """ImageOrientationPatient as 6 finite floats, else None (absent or malformed)."""
    value = _attr(ds, "ImageOrientationPatient")
    try:
        numbers = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    if len(numbers) != 6 or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


# --------------------------------------------------------------------------------------------------
# Linkage keys for DICOM SEG export (``core.study.DicomReference``): kept apart from ``metadata``
# --------------------------------------------------------------------------------------------------

_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def _uid(ds: Dataset | None, keyword: str) -> str | None:
    """A well-formed UID (digits and dots, at most 64 characters), else None: nothing else can pass."""
    value = _attr(ds, keyword) if ds is not None else None
    text = str(value).strip().rstrip("\x00") if value is not None else ""
    return text if len(text) <= 64 and _UID_PATTERN.fullmatch(text) else None


def _image_position(ds: Dataset | None) -> tuple[float, float, float] | None:
    """ImagePositionPatient as 3 finite floats, else None."""
    value = _attr(ds, "ImagePositionPatient") if ds is not None else None
    try:
        numbers = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == 3 and all(math.isfinite(v) for v in numbers) else None


def _positive_float(value) -> float | None:
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) and number > 0 else None


def dicom_reference(ds: Dataset, frames: list[DicomFrame], *, multi_frame: bool = False,
                    geometry: Dataset | None = None, fallback_thickness_mm: float | None = None) -> DicomReference:
    """The linkage keys and geometry of ``ds`` (the first file of a series, or the only one) for ``frames``.

    ``geometry``: the dataset holding PixelSpacing, ImageOrientationPatient and SliceThickness when
    they are not at the top level (an Enhanced CT file's shared functional groups);
    ``fallback_thickness_mm`` (a series' slice spacing) stands in for an absent SliceThickness.
    """
    where = geometry if geometry is not None else ds
    spacing = _attr(where, "PixelSpacing")  # PixelSpacing only: ImagerPixelSpacing is not in patient space
    try:
        pixel_spacing = tuple(float(v) for v in list(spacing)[:2]) if spacing is not None else None
    except (TypeError, ValueError):
        pixel_spacing = None
    if pixel_spacing is not None and (len(pixel_spacing) != 2 or not all(_positive_float(v) for v in pixel_spacing)):
        pixel_spacing = None
    return DicomReference(
        study_instance_uid=_uid(ds, "StudyInstanceUID"),
        series_instance_uid=_uid(ds, "SeriesInstanceUID"),
        sop_class_uid=_uid(ds, "SOPClassUID"),
        frame_of_reference_uid=_uid(ds, "FrameOfReferenceUID"),
        modality=_clean("Modality", _attr(ds, "Modality")),
        rows=_int_attr(ds, "Rows", 0),
        columns=_int_attr(ds, "Columns", 0),
        frames=tuple(frames),
        image_orientation=_image_orientation(where),
        pixel_spacing_mm=pixel_spacing,
        slice_thickness_mm=_positive_float(_attr(where, "SliceThickness")) or fallback_thickness_mm,
        multi_frame=multi_frame,
    )


def _has_voi_lut(ds: Dataset) -> bool:
    sequence = _attr(ds, "VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return _attr(item, "LUTDescriptor") is not None and _attr(item, "LUTData") is not None


def _colour_dicom_to_grey(stored: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        try:
            stored = apply_color_lut(stored, ds)
        except _DICOM_DATA_ERRORS as exc:
            raise UnreadableFileError("The DICOM palette colour table is invalid: the file is damaged.") from exc
    if stored.ndim != 3 or stored.shape[-1] < 3:
        layout = _clean("PhotometricInterpretation", photometric) or "unknown"
        raise UnreadableFileError(
            f"The DICOM image has an unexpected layout ({layout}, shape {stored.shape}) and cannot be shown."
        )
    # pydicom returns YBR data converted to RGB
    maximum = float(np.iinfo(stored.dtype).max) if stored.dtype.kind in "ui" else None
    rgb = stored[..., :3].astype(np.float64)
    grey = rgb @ _LUMA
    return grey / maximum if maximum else _min_max(grey)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _attr(ds, keyword)
        try:
            row, col = (float(v) for v in list(value)[:2]) if value is not None else (None, None)
        except (TypeError, ValueError):
            continue
        if row is not None and all(math.isfinite(v) and 0 < v < 10 for v in (row, col)):
            return row, col
    return None


def _standard_uid_name(value) -> str | None:
    """The registered name of a standard (non-private) UID such as a SOP class, else None."""
    if value is None:
        return None
    uid = UID(str(value))
    name = uid.name
    if not uid.is_valid or uid.is_private or name == str(uid):
        return None
    return name


def _clean(keyword: str, value) -> str | None:
    """The value as text when it matches the attribute's allow-list pattern, else None."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    texts = []
    for item in items:
        text = f"{float(item):g}" if isinstance(item, float) else str(item).strip()
        if DICOM_ALLOWED_ATTRIBUTES[keyword] is _CODE:
            text = text.upper()
        if not DICOM_ALLOWED_ATTRIBUTES[keyword].fullmatch(text):
            return None
        texts.append(text)
    return "\\".join(texts) if texts else None


def _allowed_metadata(ds: Dataset) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for keyword in DICOM_ALLOWED_ATTRIBUTES:
        try:
            text = _clean(keyword, _attr(ds, keyword))
        except (TypeError, ValueError, OverflowError):
            text = None
        if text:
            metadata[keyword] = text
    transfer_syntax = _standard_uid_name(ds.file_meta.get("TransferSyntaxUID"))
    sop_class = _standard_uid_name(_attr(ds, "SOPClassUID"))
    if transfer_syntax:
        metadata["TransferSyntax"] = transfer_syntax
    if sop_class:
        metadata["SOPClass"] = sop_class
    return metadata


