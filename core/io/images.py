"""PNG, JPEG, BMP and TIFF through Pillow, format sniffing, and the helpers both decoders share."""

from __future__ import annotations

import io
import math
import re
import struct
from pathlib import PurePath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import FileTooLargeError, UnreadableFileError
from ..study import Study

# --------------------------------------------------------------------------------------------------
# Limits and tables
# --------------------------------------------------------------------------------------------------

MAX_PIXELS = 80_000_000  # decompression-bomb cap, checked from the header before any pixel is decoded

# Content signatures of the formats we decode: (offset, magic, file_format).
IMAGE_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"II+\x00", "tiff"),  # BigTIFF
    (0, b"MM\x00+", "tiff"),
    (0, b"BM", "bmp"),  # also requires a known DIB header size, see _sniff
)
BMP_DIB_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
PILLOW_FORMATS = {"png": {"PNG"}, "jpeg": {"JPEG", "MPO"}, "bmp": {"BMP", "DIB"}, "tiff": {"TIFF"}}

# Files people upload by mistake: (offset, magic, what it is).
OTHER_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive or an Office document"),
    (0, b"GIF87a", "a GIF image"),
    (0, b"GIF89a", "a GIF image"),
    (0, b"\x1f\x8b", "a gzip-compressed file"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!", "a RAR archive"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image file (only JPEG 2000 inside DICOM is supported)"),
    (0, b"\xff\x4f\xff\x51", "a raw JPEG 2000 code stream (only JPEG 2000 inside DICOM is supported)"),
    (8, b"WEBP", "a WebP image"),
    (4, b"ftypheic", "a HEIC photo"),
    (4, b"ftypmif1", "a HEIF photo"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old-style Office document"),
)

# Exceptions Pillow raises on malformed data (TypeError: e.g. a TIFF without dimensions).
_PILLOW_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" conversion
MSG_TRUNCATED = "The file ends early: it looks truncated. Upload the complete file."


# --------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    if data[128:132] == b"DICM":
        return "dicom"
    for offset, magic, kind in IMAGE_SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            if kind == "bmp" and (len(data) < 18 or int.from_bytes(data[14:18], "little") not in BMP_DIB_HEADER_SIZES):
                continue  # "BM" alone is too weak a signature
            return kind
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = data[:4096]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if len(data) > len(sample) and exc.start >= len(sample) - 3:  # a character cut by the sample
            return True
    printable = sum(32 <= b < 127 or b in b"\t\n\r\f" for b in sample)
    return printable / len(sample) > 0.95


def _unrecognised_message(filename: str | None) -> str:
    suffix = PurePath(filename).suffix.lower() if filename else ""
    hint = ""
    if re.fullmatch(r"\.[a-z0-9]{1,6}", suffix):
        hint = f" The name ends in '{suffix}', but the content does not match that format."
    return (
        "This file is not a recognised image: it is not DICOM, PNG, JPEG, BMP or TIFF, or it is "
        f"damaged.{hint} Upload the original image file."
    )


# --------------------------------------------------------------------------------------------------
# Pillow formats
# --------------------------------------------------------------------------------------------------


def _load_pillow(data: bytes, kind: str) -> Study:
    label = kind.upper()
    warnings: list[str] = []
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise FileTooLargeError(_too_many_pixels_message()) from exc
    except UnidentifiedImageError as exc:
        raise UnreadableFileError(
            f"The file starts like a {label} image but its header cannot be read: it is damaged or "
            "truncated. Upload the complete, original file."
        ) from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise UnreadableFileError(_pillow_failure_message(label, exc)) from exc

    with image:
        if image.format not in PILLOW_FORMATS[kind]:
            raise UnreadableFileError(
                f"The file starts like a {label} image but is not one. Upload the original image file."
            )
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise FileTooLargeError(_too_many_pixels_message(width, height))
        if width < 1 or height < 1:
            raise UnreadableFileError(f"The {label} image has no pixels ({width} x {height}).")
        try:
            frames = getattr(image, "n_frames", 1)
            image.load()
            image = ImageOps.exif_transpose(image)  # EXIF orientation (cameras, phones, some scanners)
            image.load()
        except Image.DecompressionBombError as exc:
            raise FileTooLargeError(_too_many_pixels_message(width, height)) from exc
        except _PILLOW_DATA_ERRORS as exc:
            raise UnreadableFileError(_pillow_failure_message(label, exc)) from exc
        mode = image.mode
        try:
            pixels = _pillow_to_grey(image)
        except (OSError, ValueError) as exc:  # Pillow cannot convert this pixel mode
            raise UnreadableFileError(
                f"The {label} image uses a pixel format ({mode}) that cannot be turned into grey levels. "
                "Export it as 8- or 16-bit greyscale or RGB."
            ) from exc
    if frames > 1:
        warnings.append(f"This {label} file holds {frames} images; only the first one is shown and analysed.")

    metadata = {"Rows": str(pixels.shape[0]), "Columns": str(pixels.shape[1]), "SourceMode": mode}
    return Study(pixels=_finalise(pixels), file_format=kind, metadata=metadata, warnings=warnings, frames=frames)


def _pillow_failure_message(label: str, exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text or "premature end" in text:
        return MSG_TRUNCATED
    return f"The {label} image cannot be decoded: the file is damaged. Upload the original image file."


def _pillow_to_grey(image: Image.Image) -> np.ndarray:
    """Grey levels: floats in [0, 1] (colour -> luma, alpha dropped, 16-bit kept at full range), 8-bit as uint8."""
    mode = image.mode
    if mode.startswith("I;16"):
        values = np.asarray(image)
        info = np.iinfo(values.dtype) if values.dtype.kind in "ui" else np.iinfo(np.uint16)
        return (values.astype(np.float64) - info.min) / (float(info.max) - info.min)
    if mode == "I":  # 32-bit integer; Pillow also uses it for some 16-bit files
        values = np.asarray(image, dtype=np.float64)
        if values.min() >= 0 and values.max() <= 65535:
            return values / 65535.0
        return _min_max(values)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            return values
        return _min_max(values)
    if mode in {"1", "L", "LA", "La"}:
        return np.asarray(image.convert("L"))  # 8-bit levels: _finalise divides them by 255
    # RGB, RGBA, P, PA, CMYK, YCbCr, LAB, HSV...: to RGB (alpha dropped, not composited), then luma.
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return rgb @ _LUMA / 255.0


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


def _too_many_pixels_message(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width} x {height} pixels)" if width and height else ""
    return (
        f"The image is too large{size}: at most {MAX_PIXELS // 1_000_000} megapixels can be analysed. "
        "Export it at a lower resolution."
    )


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (``high`` may be below ``low``); all zeros if they are equal."""
    if high == low or not (math.isfinite(low) and math.isfinite(high)):
        return np.zeros(values.shape, dtype=np.float64)
    return (np.asarray(values, dtype=np.float64) - low) / (high - low)


def _min_max(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float64)
    return _scale(values, float(finite.min()), float(finite.max()))


def _finalise(pixels: np.ndarray) -> np.ndarray:
    """C-ordered float32 grey levels in [0, 1]: 8-bit levels (uint8) divided by 255, other values checked and clipped."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise UnreadableFileError(f"The image has an unexpected shape {pixels.shape} and cannot be shown.")
    if pixels.dtype == np.uint8:  # divided in float32: for each of the 256 levels the float64 quotient's rounding
        return np.divide(pixels, np.float32(255), dtype=np.float32)
    pixels = pixels.astype(np.float64, copy=False)
    if not np.isfinite(pixels).all():
        if not np.isfinite(pixels).any():
            raise UnreadableFileError("The image holds no valid pixel values.")
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)
