"""Decode an uploaded file into a de-identified ``Study``, or a CT volume into a ``Volume``.

CT volumes (``load_volume``, ``load_volume_path``): one NIfTI file, one zip, or the DICOM files of one
series, in the canonical frame of ``core.io.volume``; ``nifti`` and ``series`` hold the readers.

The format is recognised from the content (magic bytes), never from the file name. PNG, JPEG, BMP
and TIFF go through Pillow; DICOM goes through pydicom (with pylibjpeg for compressed transfer
syntaxes). Whatever goes wrong, the caller gets one of the typed errors of ``core.errors`` with a
message written for the person uploading the file; the library's own exception stays attached as
``__cause__`` for the logs.

De-identification: only the DICOM attributes in ``DICOM_ALLOWED_ATTRIBUTES`` (an allow-list; none of
them is listed in DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile) can reach
the ``Study``, after their values have been checked against a strict pattern. Nothing from the file
name, PNG text chunks or EXIF is kept, and no value read from a file is ever put into a message.
The one exception: the linkage keys a DICOM SEG export needs (Study, Series, SOP Instance and Frame
of Reference UIDs, and the geometry) are kept apart, in ``dicom_reference`` (``core.study.DicomReference``,
never in ``metadata``, hidden from ``repr``), and only ``core.dicom_seg`` reads them.
"""


from __future__ import annotations

from pathlib import Path

from ..errors import FileTooLargeError, UnreadableFileError, UnsupportedInputError
from ..settings import max_upload_mb
from ..study import Study
from .dicom import (
    DICOM_ALLOWED_ATTRIBUTES,
    MAX_INFLATED_BYTES,
    _load_dicom,
    _read_dicom,
    _refuse_deflate_bomb,
    _try_read_headerless_dicom,
)
from .images import MAX_PIXELS, OTHER_SIGNATURES, _load_pillow, _looks_like_text, _sniff, _unrecognised_message
from .nifti import load_nifti, nifti_bytes, write_source_nifti
from .series import (
    MAX_SERIES_BYTES,
    MAX_SERIES_FILES,
    dicom_series_bytes,
    is_ignored_name,
    load_dicom_series,
    load_files,
    load_zip,
    sniff_volume_file,
)
from .volume import MAX_VOXELS, Volume, volume_from_canonical

__all__ = [
    "DICOM_ALLOWED_ATTRIBUTES", "MAX_INFLATED_BYTES", "MAX_PIXELS", "MAX_VOXELS", "Volume", "check_upload_size",
    "dicom_series_bytes", "load_dicom_series", "load_image", "load_nifti", "load_volume", "load_volume_path",
    "load_zip", "nifti_bytes", "volume_from_canonical", "write_source_nifti",
]

# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def check_upload_size(n_bytes: int) -> None:
    """Raise ``FileTooLargeError`` when ``n_bytes`` is above the configured upload cap."""
    limit_mb = max_upload_mb()
    if n_bytes > limit_mb * 1024 * 1024:
        raise FileTooLargeError(
            f"The file is {n_bytes / 1024 / 1024:.1f} MB; the limit is {limit_mb} MB. "
            "Export the image at a lower size or as a compressed DICOM."
        )


def load_image(data: bytes, filename: str | None = None) -> Study:
    """Decode ``data`` (PNG, JPEG, BMP, TIFF or DICOM) into a ``Study`` with pixels in [0, 1].

    ``filename`` is only used for its extension, to make error messages more helpful; it is never
    stored, since file names often contain patient names.
    """
    check_upload_size(len(data))
    if not data:
        raise UnreadableFileError("The file is empty (0 bytes). Upload the image file itself.")
    _refuse_deflate_bomb(data)
    kind = _sniff(data)
    if kind == "dicom":
        return _load_dicom(_read_dicom(data, force=False))
    if kind is not None:
        return _load_pillow(data, kind)

    for offset, magic, what in OTHER_SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            raise UnreadableFileError(
                f"This is {what}, not a supported image. Upload a DICOM, PNG, JPEG, BMP or TIFF file."
            )
    if _looks_like_text(data):
        raise UnreadableFileError(
            "This is a text file, not an image. Upload a DICOM, PNG, JPEG, BMP or TIFF file."
        )
    # DICOM written without the 128-byte preamble and "DICM" prefix: accept it only when pydicom
    # finds a real image in it, since force=True parses almost any bytes into some dataset.
    dataset = _try_read_headerless_dicom(data)
    if dataset is not None:
        return _load_dicom(dataset)
    raise UnreadableFileError(_unrecognised_message(filename))



# --------------------------------------------------------------------------------------------------
# CT volumes
# --------------------------------------------------------------------------------------------------

MSG_ONE_VOLUME = ("Upload one NIfTI file (.nii or .nii.gz), one zip archive of a DICOM series, or the DICOM "
                  "files of one series.")


def load_volume(uploads: list[tuple[str, bytes]]) -> Volume:
    """A CT ``Volume`` from the page's uploads: one NIfTI file, one zip, or the DICOM files of one series.

    Recognised by content. File names are only compared against DICOMDIR and hidden files (skipped when
    a whole folder is selected), never stored or shown: they often hold patient names.
    """
    if not uploads:
        raise UnreadableFileError(f"No file was uploaded. {MSG_ONE_VOLUME}")
    blobs = [data for name, data in uploads if len(uploads) == 1 or not is_ignored_name(name or "")]
    for number, data in enumerate(blobs, start=1):
        if not data:
            raise UnreadableFileError(f"File {number} of {len(blobs)} is empty (0 bytes).")
    kinds = [sniff_volume_file(data) for data in blobs]
    if len(blobs) == 1:
        return _load_one(blobs[0], kinds[0])
    if "zip" in kinds or "nifti" in kinds:
        raise UnsupportedInputError(f"Several files were uploaded, with a NIfTI file or a zip among them. {MSG_ONE_VOLUME}")
    others = len(blobs) - kinds.count("dicom")
    if others:
        raise UnreadableFileError(
            f"{others} of the {len(blobs)} uploaded files are not DICOM files. Upload only the DICOM files of "
            "one series (or one zip of them)."
        )
    return load_dicom_series(blobs)


def _load_one(data: bytes, kind: str | None) -> Volume:
    if kind == "zip":
        return load_zip(data)
    if kind == "nifti":
        return load_nifti(data)
    if kind == "dicom":
        return load_dicom_series([data])
    if kind == "gzip":
        raise UnreadableFileError(f"This is a gzip-compressed file that is not a NIfTI volume. {MSG_ONE_VOLUME}")
    if _sniff(data) is not None:
        raise UnsupportedInputError(
            "This is a 2-D picture (PNG, JPEG, BMP or TIFF), not a CT volume. Use the CT slice page for one slice, "
            f"or: {MSG_ONE_VOLUME}"
        )
    raise UnreadableFileError(f"The file is not recognised as a CT volume. {MSG_ONE_VOLUME}")


def load_volume_path(path: Path) -> Volume:
    """A CT ``Volume`` from a NIfTI (or zip, or single DICOM) file, or a folder holding one DICOM series (searched recursively)."""
    path = Path(path)
    if path.is_file():
        return load_volume([(path.name, path.read_bytes())])
    if not path.is_dir():
        raise UnreadableFileError("The path is neither a file nor a folder.")
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not is_ignored_name(p.relative_to(path).as_posix())]
    if len(files) > MAX_SERIES_FILES:
        raise FileTooLargeError(f"The folder holds {len(files)} files; the limit is {MAX_SERIES_FILES}. Give one series.")
    if sum(p.stat().st_size for p in files) > MAX_SERIES_BYTES:
        raise FileTooLargeError(f"The folder holds more than {MAX_SERIES_BYTES // 2**20} MB of files. Give one series.")
    return load_files([p.read_bytes() for p in files], "The folder")
