"""DICOM files built in memory with pydicom, for tests of ``core.io`` and ``core.guard``."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
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


# --------------------------------------------------------------------------------------------------
# CT: slices in Hounsfield units stored the ways scanners store them
# --------------------------------------------------------------------------------------------------

AXIAL = ["1", "0", "0", "0", "1", "0"]  # ImageOrientationPatient of an axial slice
IDENTIFIERS = {  # put into CT test files; none may reach a Study or a message
    "PatientName": "Doe^Jane^Q",
    "PatientID": "PID-CT-998877",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC-CT-554433",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "Who^Doctor",
    "StudyDate": "20200315",
    "StudyDescription": "CT THORAX DOE JANE",
}


def ct_dataset(
    hu: np.ndarray,
    *,
    signed: bool = True,
    slope: float = 1.0,
    intercept: float = 0.0,
    padding_value: int | None = None,
    padding_limit: int | None = None,
    modality: str | None = "CT",
    orientation: list[str] | None = AXIAL,
    **attributes,
) -> Dataset:
    """A CT dataset whose stored values are ``(hu - intercept) / slope`` (rounded), int16 or uint16.

    ``hu`` (rows, cols) or (frames, rows, cols). ``modality=None`` leaves the Modality tag out;
    padding values (stored-value space) are written with the VR that PixelRepresentation implies.
    """
    dtype = np.int16 if signed else np.uint16
    stored = np.round((np.asarray(hu, dtype=np.float64) - intercept) / slope)
    info = np.iinfo(dtype)
    assert stored.min() >= info.min and stored.max() <= info.max, "HU do not fit the stored type"
    ds = build_dataset(stored.astype(dtype), modality=modality or "CT", **attributes)
    if modality is None:
        del ds.Modality
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    if orientation is not None:
        ds.ImageOrientationPatient = orientation
    vr = "SS" if signed else "US"
    if padding_value is not None:
        ds.add_new(0x00280120, vr, padding_value)  # PixelPaddingValue
    if padding_limit is not None:
        ds.add_new(0x00280121, vr, padding_limit)  # PixelPaddingRangeLimit
    return ds


def ct_slice_hu(size: int = 128, label: str = "non-covid", seed: int = 0) -> np.ndarray:
    """A synthetic axial chest slice in HU (core.ct_phantoms), rounded to whole HU."""
    from core.ct_phantoms import make_ct_phantom

    return np.round(make_ct_phantom(label, seed=seed, size=size).hu).astype(np.float64)


@pytest.fixture
def ct_dicom() -> SimpleNamespace:
    """``ct_dicom.make(hu, signed=..., slope=..., intercept=..., padding_value=..., modality=..., preamble=True, **attrs)``."""

    def make(hu: np.ndarray, *, preamble: bool = True, **kwargs) -> bytes:
        return to_bytes(ct_dataset(hu, **kwargs), preamble=preamble)

    return SimpleNamespace(dataset=ct_dataset, make=make, slice_hu=ct_slice_hu, identifiers=IDENTIFIERS, axial=AXIAL)


# ---------------------------------------------------------------------------------------------
# Review log backends: SQLite (a file under tmp_path) and a real PostgreSQL server (tests/postgres_cluster.py)


@pytest.fixture(scope="session")
def postgresql_server():
    """A throw-away PostgreSQL cluster for the whole session; skipped only when PostgreSQL cannot run here."""
    from tests.postgres_cluster import ClusterUnavailable, PostgresCluster

    try:
        cluster = PostgresCluster.start()
    except ClusterUnavailable as reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgresql_url(postgresql_server) -> str:
    """URL of a new, empty database on the session's PostgreSQL server (dropped afterwards)."""
    url = postgresql_server.create_database()
    yield url
    postgresql_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def review_db_url(request, tmp_path) -> str:
    """A fresh review database on each backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    return request.getfixturevalue("postgresql_url")


@pytest.fixture
def db_path(tmp_path) -> Path:
    """The review log's SQLite file of one test (``url`` is its SQLAlchemy URL)."""
    return tmp_path / "reviews.sqlite"


@pytest.fixture
def url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def store(url: str):
    """The review log on ``url``, closed after the test (modules with another store define their own)."""
    from core.reviews import ReviewStore

    with ReviewStore(url) as opened:
        yield opened
