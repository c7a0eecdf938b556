"""``CaseStore``: the de-identified cases reviewers saved, so that any reviewer can reopen them.

Usage::

    reviews = ReviewStore(core.settings.review_db_url())           # runs the migrations (table ``cases``)
    cases = CaseStore(reviews, core.settings.case_store_dir(), retention_days=core.settings.case_retention_days())
    record = cases.save_case(study, CasePrediction(task="cxr", model_name=..., model_version=...,
                             weights_sha256=..., predicted_label=..., predicted_probabilities={...}))
    cases.save_case(study, ...)                  # the same case again: the same record, nothing written
    cases.get_case(record.case_hash, "cxr")      # -> CaseRecord | None
    cases.list_cases(task="cxr")                 # newest first
    image = cases.load_image(record)             # -> CaseImage: arrays + allow-listed metadata
    image.to_study() / image.to_volume()         # what the pages analyse again
    cases.purge()                                # retention: delete expired pixel files, mark their rows

What is kept: only the arrays the app shows and analyses (a ``Study``'s display pixels, and its
Hounsfield units for CT; a ``Volume``'s HU in the canonical frame) and ``ALLOWED_METADATA``: the kind of
image, the modality, the pixel or voxel spacing and whether it is a synthetic phantom. No file name,
no DICOM tag, no free text. The task, the model's answer and the dates are columns of ``cases``.

Content addressing: a case's arrays and metadata are written as one zip of ``.npy`` entries plus
``metadata.json`` (``.npz``, readable by ``numpy.load``) with fixed entry dates, so the same content
always gives the same bytes; the file is named by the SHA-256 of those bytes
(``<dir>/<first two hex digits>/<sha256>.npz``) and checked against its name when read. Two tasks (or
two saves) of the same pixels share one file. Lossless compaction: HU arrays holding whole numbers
only are stored as int16 and come back as float32, bit for bit.

A case row is keyed by (``case_hash``, ``task``) and written once: saving it again (another reviewer,
another rerun) returns the stored record unchanged. Retention: ``expires_at = created_at +
retention_days``; ``purge`` sets ``purged_at`` on the expired rows and deletes the pixel files no
unexpired row needs. Reviews are never touched. A purged case saved again gets its pixels back and a
new ``expires_at``.

Errors are ``CaseStoreError`` (a ``ReviewLogError``) with messages for the user.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update

from core.errors import ReviewLogError
from core.io.volume import Volume, volume_from_canonical
from core.reviews.schema import MODEL_FIELD_MAX, cases_table
from core.reviews.store import (  # the review log's own field checks, so both tables accept the same values
    ReviewStore,
    ReviewValidationError,
    _label,
    _probabilities,
    _sha256,
    _short_text,
    _task,
    read_transaction,
    write_transaction,
)
from core.study import Study

ALLOWED_METADATA = frozenset({"kind", "modality", "pixel_spacing_mm", "spacing_mm", "synthetic"})
IMAGE_ARRAYS = frozenset({"pixels", "hu"})  # a Study: display pixels in [0, 1], CT Hounsfield units
VOLUME_ARRAYS = frozenset({"hu"})  # a Volume: HU in the canonical [z, y, x] frame
ORPHAN_GRACE = timedelta(hours=1)  # a file written by a save whose row is not committed yet is no orphan
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry date: same content, same bytes, same name
# deflate level 1: on a 300 x 512 x 512 HU volume 3.6 s and 121 MB, against 9.8 s and 120 MB at level 6
_ZIP_LEVEL = 1
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")  # a DICOM Modality code (CT, CR, DX...), nothing free-form
_FILE_NAME = re.compile(r"^[0-9a-f]{64}\.npz$")


class CaseStoreError(ReviewLogError):
    """A case could not be saved, found or read back."""


class CaseNotFoundError(CaseStoreError):
    """No case is stored under this hash for this task."""


class CaseExpiredError(CaseStoreError):
    """The case's retention ended and its pixels were deleted (its reviews remain)."""


@dataclass(frozen=True, kw_only=True)
class CasePrediction:
    """The model's answer when the case was saved (what the worklist filters and the reopened page shows)."""

    task: str
    model_name: str
    model_version: str
    weights_sha256: str
    predicted_label: str
    predicted_probabilities: Mapping[str, float]

    def validated(self) -> dict[str, Any]:
        """Column values; raises ``ReviewValidationError`` naming the first bad field."""
        probabilities = _probabilities(self.predicted_probabilities)
        predicted = _label("predicted_label", self.predicted_label)
        if predicted not in probabilities:
            raise ReviewValidationError(
                "predicted_label",
                f"Predicted label {predicted!r} is not one of the model's classes ({', '.join(probabilities)}).",
            )
        return {
            "task": _task("task", self.task),
            "model_name": _short_text("model_name", "Model name", self.model_name, MODEL_FIELD_MAX),
            "model_version": _short_text("model_version", "Model version", self.model_version, MODEL_FIELD_MAX),
            "weights_sha256": _sha256("weights_sha256", "Weights SHA-256", self.weights_sha256),
            "predicted_label": predicted,
            "predicted_probabilities": probabilities,
            "confidence": max(probabilities.values()),
        }


@dataclass(frozen=True, kw_only=True)
class CaseRecord:
    """One row of ``cases`` (a plain copy, safe to keep after the query)."""

    case_hash: str
    task: str
    model_name: str
    model_version: str
    weights_sha256: str
    predicted_label: str
    predicted_probabilities: dict[str, float]
    confidence: float  # the top probability
    pixel_sha256: str
    created_at: datetime
    expires_at: datetime
    purged_at: datetime | None = None

    @property
    def available(self) -> bool:
        """Whether the pixels are still stored (retention has not removed them)."""
        return self.purged_at is None


@dataclass(frozen=True)
class CaseImage:
    """A stored case's arrays and allow-listed metadata, as read back from its file."""

    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    def to_study(self) -> Study:
        """The ``Study`` the page showed: same pixels, so the same ``case_hash``."""
        if self.kind != "image":
            raise CaseStoreError("This stored case is a CT volume; open it on the CT volume page.")
        spacing = self.metadata.get("pixel_spacing_mm")
        return Study(
            pixels=self.arrays["pixels"],
            file_format="stored",
            modality=self.metadata.get("modality"),
            pixel_spacing_mm=tuple(spacing) if spacing else None,
            synthetic=bool(self.metadata.get("synthetic")),
            hu=self.arrays.get("hu"),
        )

    def to_volume(self) -> Volume:
        """The ``Volume`` the page showed, in the canonical frame: same HU and spacing, so the same ``case_hash``."""
        if self.kind != "volume":
            raise CaseStoreError("This stored case is a single image; open it on the X-ray or CT slice page.")
        volume = volume_from_canonical(self.arrays["hu"], self.metadata["spacing_mm"], file_format="stored",
                                       synthetic=bool(self.metadata.get("synthetic")))
        volume.modality = self.metadata.get("modality")
        return volume


@dataclass(frozen=True)
class PurgeReport:
    cases_purged: int  # rows whose retention ended now (marked, not deleted)
    files_deleted: int  # pixel files no unexpired case needs any more
    orphans_deleted: int  # files no row names (a save that failed after writing its file)


# --------------------------------------------------------------------------------------------------
# De-identification: what goes into a file


def case_payload(image: Study | Volume) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of a ``Study`` or a ``Volume``: the shown pixels and ``ALLOWED_METADATA`` only.

    Built field by field from the allow-list (never by copying ``metadata`` dicts), so nothing a
    loader kept for display, let alone an identifier, can slip into the store. An image whose DICOM
    header flags burned-in annotation (text in the pixels) is refused with ``CaseStoreError``.
    """
    modality = (image.modality or "").strip().upper()
    metadata: dict[str, Any] = {"modality": modality if _MODALITY.match(modality) else None,
                                "synthetic": bool(image.synthetic)}
    if isinstance(image, Volume):
        arrays = {"hu": np.asarray(image.hu, dtype=np.float32)}
        metadata |= {"kind": "volume", "spacing_mm": [float(s) for s in image.spacing_mm]}
    elif isinstance(image, Study):
        if image.burned_in_annotation:  # the pixels themselves may carry a name or an ID
            raise CaseStoreError("This image's DICOM header says identifying text may be burned into its pixels, "
                                 "so it is not kept in the case store (the review itself is saved).")
        arrays = {"pixels": np.asarray(image.pixels, dtype=np.float32)}
        if image.hu is not None:
            arrays["hu"] = np.asarray(image.hu, dtype=np.float32)
        spacing = image.pixel_spacing_mm
        metadata |= {"kind": "image", "pixel_spacing_mm": [float(s) for s in spacing] if spacing else None}
    else:
        raise TypeError(f"expected a Study or a Volume, got {type(image).__name__}")
    assert set(metadata) <= ALLOWED_METADATA
    return arrays, metadata


def _compact(array: np.ndarray) -> np.ndarray:
    """int16 when a float array holds whole numbers in int16's range (HU usually do): lossless, far smaller."""
    if array.dtype == np.float32 and array.size and np.all(np.isfinite(array)):
        low, high = float(array.min()), float(array.max())
        if -32768 <= low and high <= 32767 and np.array_equal(np.rint(array), array):
            return array.astype("<i2")
    return array


def encode_case(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> bytes:
    """The file's bytes: deterministic for the same content (fixed entry dates and order)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(_compact(arrays[name])), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), entry.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL)
        text = json.dumps(dict(metadata), sort_keys=True).encode()
        archive.writestr(zipfile.ZipInfo("metadata.json", date_time=_ZIP_DATE), text,
                         compress_type=zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL)
    return buffer.getvalue()


def decode_case(data: bytes) -> CaseImage:
    """Arrays (float32) and metadata of a file written by ``encode_case``; no pickles are ever loaded."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        arrays = {}
        for name in archive.namelist():
            if name.endswith(".npy"):
                with archive.open(name) as handle:
                    array = np.lib.format.read_array(handle, allow_pickle=False)
                arrays[name[:-4]] = array.astype(np.float32, copy=False)
    unexpected = set(metadata) - ALLOWED_METADATA
    kind = metadata.get("kind")
    allowed_arrays = VOLUME_ARRAYS if kind == "volume" else IMAGE_ARRAYS
    needed = "hu" if kind == "volume" else "pixels"
    if unexpected or kind not in ("image", "volume") or needed not in arrays or not set(arrays) <= allowed_arrays:
        raise CaseStoreError("A stored case file holds fields this app does not write; it was not opened.")
    return CaseImage(arrays, metadata)


# --------------------------------------------------------------------------------------------------
# The store


class CaseStore:
    """Case rows in the review log's database (its engine), pixel files in ``directory``.

    ``clock`` (returning an aware datetime) exists for tests, as in ``ReviewStore``.
    """

    def __init__(self, reviews: ReviewStore, directory: str | os.PathLike, *, retention_days: int,
                 clock: Callable[[], datetime] | None = None) -> None:
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
            raise CaseStoreError("The case retention must be a whole number of days, at least 1.")
        self.reviews = reviews  # its migrations created ``cases``; it also reports database errors
        self.directory = Path(directory)
        self.retention = timedelta(days=retention_days)
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    def __repr__(self) -> str:
        return f"CaseStore({self.reviews.url!r}, {str(self.directory)!r})"

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise CaseStoreError("The case store's clock must return a timezone-aware datetime.")
        return now.astimezone(timezone.utc)

    def path_of(self, pixel_sha256: str) -> Path:
        return self.directory / pixel_sha256[:2] / f"{pixel_sha256}.npz"

    # ---- writes

    def save_case(
        self, image: Study | Volume, prediction: CasePrediction, *, case_hash: str | None = None
    ) -> CaseRecord:
        """Keep ``image`` (de-identified) with the model's answer; idempotent per (case, task).

        ``case_hash``: the image's ``case_hash`` when the caller already has it (a volume's takes a second).
        """
        values = prediction.validated()
        case_hash = _sha256("case_hash", "Case hash", case_hash if case_hash is not None else image.case_hash)
        existing = self.get_case(case_hash, values["task"])
        if existing is not None and existing.available:
            return existing
        data = encode_case(*case_payload(image))
        pixel_sha256 = hashlib.sha256(data).hexdigest()
        now = self._now()
        t = cases_table.c
        with self.reviews._guard("saved"), write_transaction(self.reviews.engine) as conn:
            # The file is written under the write lock, so a concurrent purge cannot delete it in between.
            self._write_file(pixel_sha256, data)
            key = (t.case_hash == case_hash) & (t.task == values["task"])
            row = conn.execute(select(cases_table).where(key)).mappings().first()
            if row is None:
                conn.execute(insert(cases_table).values(
                    case_hash=case_hash, pixel_sha256=pixel_sha256, created_at=now,
                    expires_at=now + self.retention, purged_at=None, **values))
            elif row["purged_at"] is not None:  # retention removed the pixels; a reviewer brought them back
                conn.execute(update(cases_table).where(key).values(
                    pixel_sha256=pixel_sha256, expires_at=now + self.retention, purged_at=None))
            row = conn.execute(select(cases_table).where(key)).mappings().one()
        return CaseRecord(**row)

    def _write_file(self, pixel_sha256: str, data: bytes) -> None:
        path = self.path_of(pixel_sha256)
        if path.is_file() and path.stat().st_size == len(data):
            return  # the same content is stored already (content addressing)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)  # atomic: readers see the whole file or none
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def purge(self, now: datetime | None = None) -> PurgeReport:
        """Retention: mark every case whose ``expires_at`` has passed, delete the pixel files no live case needs."""
        now = self._now() if now is None else now.astimezone(timezone.utc)
        t = cases_table.c
        with self.reviews._guard("purged"), write_transaction(self.reviews.engine) as conn:
            expired = conn.execute(
                select(t.case_hash, t.task, t.pixel_sha256).where(t.purged_at.is_(None), t.expires_at <= now)
            ).all()
            if expired:
                ended = (t.purged_at.is_(None)) & (t.expires_at <= now)
                conn.execute(update(cases_table).where(ended).values(purged_at=now))
            live = set(conn.execute(select(t.pixel_sha256).where(t.purged_at.is_(None))).scalars())
            named = set(conn.execute(select(t.pixel_sha256)).scalars())
            deleted = 0
            for pixel_sha256 in {row.pixel_sha256 for row in expired} - live:
                path = self.path_of(pixel_sha256)
                if path.is_file():
                    path.unlink()
                    deleted += 1
            orphans = self._delete_orphans(named, now)
        return PurgeReport(len(expired), deleted, orphans)

    def _delete_orphans(self, named: set[str], now: datetime) -> int:
        if not self.directory.is_dir():
            return 0
        deleted = 0
        for path in self.directory.glob("*/*.npz"):
            if not _FILE_NAME.match(path.name) or path.stem in named:
                continue
            written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            if now - written > ORPHAN_GRACE:
                path.unlink()
                deleted += 1
        return deleted

    # ---- reads

    def get_case(self, case_hash: str, task: str) -> CaseRecord | None:
        case_hash = _sha256("case_hash", "Case hash", case_hash)
        task = _task("task", task)
        t = cases_table.c
        with self.reviews._guard("read"), read_transaction(self.reviews.engine) as conn:
            row = conn.execute(select(cases_table).where(t.case_hash == case_hash, t.task == task)).mappings().first()
        return None if row is None else CaseRecord(**row)

    def list_cases(self, task: str | None = None) -> list[CaseRecord]:
        """Every stored case (of ``task`` when given), purged ones included, newest first."""
        t = cases_table.c
        query = select(cases_table).order_by(t.created_at.desc(), t.case_hash)
        if task is not None:
            query = query.where(t.task == _task("task", task))
        with self.reviews._guard("read"), read_transaction(self.reviews.engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [CaseRecord(**row) for row in rows]

    def load_image(self, record: CaseRecord) -> CaseImage:
        """The case's arrays and metadata, checked against the file's content address."""
        if not record.available:
            raise CaseExpiredError(
                f"Case {record.case_hash[:12]} was kept for its retention period and its images have been deleted; "
                "its reviews are still in the Review log."
            )
        path = self.path_of(record.pixel_sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise CaseStoreError(
                f"The images of case {record.case_hash[:12]} are missing from the case store ({self.directory}). "
                "Restore the folder from a backup or save the case again from its page."
            ) from error
        except OSError as error:
            raise CaseStoreError(f"The case store ({self.directory}) cannot be read: {error.strerror}.") from error
        if hashlib.sha256(data).hexdigest() != record.pixel_sha256:
            raise CaseStoreError(
                f"The stored images of case {record.case_hash[:12]} are damaged (their SHA-256 does not match); "
                "restore the case store from a backup."
            )
        try:
            return decode_case(data)
        except (zipfile.BadZipFile, KeyError, ValueError) as error:
            raise CaseStoreError(f"The stored images of case {record.case_hash[:12]} cannot be read.") from error
