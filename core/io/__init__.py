"""Decode an uploaded file into a de-identified ``Study``.

The format is recognised from the content (magic bytes), never from the file name. PNG, JPEG, BMP
and TIFF go through Pillow; DICOM goes through pydicom (with pylibjpeg for compressed transfer
syntaxes). Whatever goes wrong, the caller gets one of the typed errors of ``core.errors`` with a
message written for the person uploading the file; the library's own exception stays attached as
``__cause__`` for the logs.

De-identification: only the DICOM attributes in ``DICOM_ALLOWED_ATTRIBUTES`` (an allow-list; none of
them is listed in DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile) can reach
the ``Study``, after their values have been checked against a strict pattern. Nothing from the file
name, PNG text chunks or EXIF is kept, and no value read from a file is ever put into a message.
"""


from __future__ import annotations

from ..errors import FileTooLargeError, UnreadableFileError
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

__all__ = ["DICOM_ALLOWED_ATTRIBUTES", "MAX_INFLATED_BYTES", "MAX_PIXELS", "check_upload_size", "load_image"]

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

