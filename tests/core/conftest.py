"""DICOM files built in memory with pydicom, for tests of ``core.io`` and ``core.guard``."""

from __future__ import annotations

import io
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

SOP_CLASSES = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "CT": CTImageStorage,
    "MR": MRImageStorage,
}


def gradient(rows: int = 128, columns: int = 128, low: int = 0, high: int = 4095, dtype=np.uint16) -> np.ndarray:
    """Values rising from ``low`` (left column) to ``high`` (right column)."""
    line = np.linspace(low, high, columns).round()
    return np.tile(line, (rows, 1)).astype(dtype)


def build_dataset(
    pixels: np.ndarray | None,
    *,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attributes,
) -> Dataset:
    """A minimal valid image dataset (or, with ``pixels=None``, one without pixel data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.SOPClassUID = SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    ds.SOPInstanceUID = "2.25.1234567890123456789"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    if pixels is not None:
        frames = pixels.shape[0] if pixels.ndim == 3 else 1
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 8 * pixels.dtype.itemsize
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    """Part 10 file (preamble + "DICM" + file meta), or a bare implicit-VR dataset without them."""
    buffer = io.BytesIO()
    if preamble:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        bare = Dataset()
        bare.update(ds)
        pydicom.dcmwrite(buffer, bare, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


_DEFAULT = object()


def make_dicom_bytes(pixels=_DEFAULT, *, preamble: bool = True, **kwargs) -> bytes:
    """``pixels`` defaults to a 128 x 128 12-bit gradient; ``None`` builds a file without pixel data."""
    pixels = gradient() if pixels is _DEFAULT else pixels
    return to_bytes(build_dataset(pixels, **kwargs), preamble=preamble)


@pytest.fixture
def make_dicom() -> Callable[..., bytes]:
    """``make_dicom(pixels, modality=..., photometric=..., bits_stored=..., preamble=True, **attributes)``."""
    return make_dicom_bytes


@pytest.fixture
def dicom() -> SimpleNamespace:
    """The builders for tests that need the dataset itself (to compress it, add private tags...)."""
    return SimpleNamespace(gradient=gradient, dataset=build_dataset, to_bytes=to_bytes, make=make_dicom_bytes)
