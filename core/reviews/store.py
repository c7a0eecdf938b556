"""``ReviewStore``: the append-only review log on SQLite.

Usage::

    store = ReviewStore(core.settings.review_db_url())      # creates / migrates the file
    review = store.add_review(ReviewInput(...))             # version 1
    store.amend_review(review.review_uid, ReviewInput(...)) # version 2, supersedes version 1
    store.current_reviews(ReviewFilters(verdict="disagree"))
    store.history(review.review_uid)
    csv_text = store.export_csv(ReviewFilters(), include_history=True)

Concurrency: every connection runs ``PRAGMA journal_mode=WAL`` and ``PRAGMA busy_timeout``; sqlite3's
own transaction handling is switched off (``isolation_level = None``) and SQLAlchemy's ``begin``
event emits ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for writes (the write lock is taken before the
latest version is read, so version numbers of amendments are race-free across processes) and a
plain deferred ``BEGIN`` for reads (a consistent snapshot; WAL readers never block writers).

Every database failure is re-raised as ``ReviewStorageError`` (a ``ReviewLogError``) with a message
for the user; a failed write rolls back and leaves existing rows as they were. The store never
deletes, truncates or re-creates the database file.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, exists, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.sql import ColumnElement

from core.classes import MANET_CLASSES
from core.errors import ReviewLogError
from core.reviews.region_schema import review_regions_table
from core.reviews.regions import Region, regions_to_json, validate_regions
from core.reviews.schema import (
    DEFAULT_TASK,
    EXTRA_LABELS,
    LABEL_MAX,
    MODEL_FIELD_MAX,
    NOTE_MAX,
    REVIEWER_MAX,
    SLICE_TASKS,
    SLICE_VIEWS,
    TASK_TITLES,
    TASKS,
    VERDICTS,
    WHERE_WRONG_MAX,
    reviews_table,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_BUSY_TIMEOUT_S = 30.0

_BEGIN_OPTION = "chest_review_begin"  # execution option read by the ``begin`` listener
_BEGIN_MODES = ("DEFERRED", "IMMEDIATE")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX_PREFIX = re.compile(r"^[0-9a-f]{1,64}$")
_UID = re.compile(r"^[0-9a-f]{32}$")
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------------------------------
# Errors


class ReviewValidationError(ReviewLogError):
    """The review (or a filter) is not acceptable; ``field`` names the offending input."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class ReviewNotFoundError(ReviewLogError):
    """No review has the given ``review_uid``."""


class ReviewConflictError(ReviewLogError):
    """Someone amended the review since the caller read it (``expected_version`` is stale)."""


class ReviewStorageError(ReviewLogError):
    """The database could not be opened, read or written (busy, read-only, corrupt, newer schema)."""


# --------------------------------------------------------------------------------------------------
# Value objects


@dataclass(frozen=True, kw_only=True)
class ReviewInput:
    """What a reviewer submits. The store adds id, review_uid, version, supersedes_id and created_at.

    ``corrected_label``: required when ``verdict == "disagree"`` (one of the model's classes, i.e. a
    key of ``predicted_probabilities``, or ``"other"`` / ``"uncertain"``, and not the predicted
    label); when ``verdict == "agree"`` leave it ``None`` (or pass the predicted label).
    ``where_wrong``: optional short free text (<= 200 chars), e.g. "missed left lower lobe
    consolidation"; allowed with either verdict (e.g. right label, wrong region). Free text must not
    contain patient identifiers: nothing checks that.
    ``task``: the page the review was made on, one of ``core.reviews.TASKS`` (``"cxr"``,
    ``"ct-slice"``, ``"ct-volume"``); an amendment must carry the task of the review it amends.
    ``slice_view`` / ``slice_index``: optional, together, only for a CT volume (task ``"ct-volume"``):
    the view (``"axial"``, ``"coronal"``, ``"sagittal"``) and the 0-based slice index along its axis
    in the canonical volume frame (``core.imaging.volume_views``) where the model went wrong. An
    amendment may change them.
    ``regions``: what the reviewer drew (``core.reviews.regions.Region``, at most 50, in image
    pixels), stored in the same transaction as the review; on a CT volume each names its slice,
    elsewhere none does. An amendment carries its own regions (pass them again to keep them).
    """

    reviewer: str
    case_hash: str
    model_name: str
    model_version: str
    weights_sha256: str
    predicted_probabilities: Mapping[str, float]
    predicted_label: str
    verdict: str
    confidence: int
    corrected_label: str | None = None
    note: str = ""
    where_wrong: str | None = None
    task: str = DEFAULT_TASK
    slice_view: str | None = None
    slice_index: int | None = None
    regions: tuple[Region, ...] = ()

    def validated(self) -> dict[str, Any]:
        """Normalised column values; raises ``ReviewValidationError`` naming the first bad field."""
        task = _task("task", self.task)
        slice_view, slice_index = _slice(task, self.slice_view, self.slice_index)
        probabilities = _probabilities(self.predicted_probabilities)
        predicted = _label("predicted_label", self.predicted_label)
        if predicted not in probabilities:
            raise ReviewValidationError(
                "predicted_label",
                f"Predicted label {predicted!r} is not one of the model's classes "
                f"({', '.join(probabilities)}).",
            )
        verdict = self.verdict.strip().lower() if isinstance(self.verdict, str) else self.verdict
        if verdict not in VERDICTS:
            raise ReviewValidationError("verdict", "Verdict must be 'agree' or 'disagree'.")
        corrected = self.corrected_label
        if isinstance(corrected, str):
            corrected = corrected.strip() or None
        if verdict == "agree":
            if corrected is not None and corrected != predicted:
                raise ReviewValidationError(
                    "corrected_label",
                    f"You agreed with the model, so the corrected label must be empty or "
                    f"{predicted!r}; choose 'disagree' to correct it to {corrected!r}.",
                )
            corrected = predicted
        else:
            if corrected is None:
                raise ReviewValidationError(
                    "corrected_label", "When you disagree, choose the correct label."
                )
            corrected = _label("corrected_label", corrected)
            allowed = (*probabilities, *EXTRA_LABELS)
            if corrected not in allowed:
                raise ReviewValidationError(
                    "corrected_label",
                    f"Corrected label {corrected!r} is not allowed; choose one of {', '.join(allowed)}.",
                )
            if corrected == predicted:
                raise ReviewValidationError(
                    "corrected_label",
                    "You disagreed but chose the predicted label as the correction; "
                    "choose another label or 'agree'.",
                )
        return {
            "reviewer": _reviewer(self.reviewer),
            "case_hash": _sha256("case_hash", "Case hash", self.case_hash),
            "model_name": _short_text("model_name", "Model name", self.model_name, MODEL_FIELD_MAX),
            "model_version": _short_text(
                "model_version", "Model version", self.model_version, MODEL_FIELD_MAX
            ),
            "weights_sha256": _sha256("weights_sha256", "Weights SHA-256", self.weights_sha256),
            "predicted_probabilities": probabilities,
            "predicted_label": predicted,
            "verdict": verdict,
            "corrected_label": corrected,
            "confidence": _confidence(self.confidence),
            "note": _note(self.note),
            "where_wrong": _where_wrong(self.where_wrong),
            "task": task,
            "slice_view": slice_view,
            "slice_index": slice_index,
            "regions": validate_regions(self.regions, needs_slice=task in SLICE_TASKS),  # rows of review_regions
        }


@dataclass(frozen=True, kw_only=True)
class Review:
    """One stored version of a review (a plain copy of a row, safe to keep after the query)."""

    id: int
    review_uid: str
    version: int
    supersedes_id: int | None
    reviewer: str
    case_hash: str
    model_name: str
    model_version: str
    weights_sha256: str
    predicted_probabilities: dict[str, float]
    predicted_label: str
    verdict: str
    corrected_label: str
    confidence: int
    note: str
    where_wrong: str | None
    created_at: datetime  # timezone-aware UTC
    task: str  # the page the review was made on: one of TASKS
    slice_index: int | None = None  # CT volume: 0-based index along slice_view's axis (canonical frame)
    slice_view: str | None = None  # CT volume: "axial" | "coronal" | "sagittal"
    regions: tuple[Region, ...] = ()  # drawn with this version, in drawing order (core.reviews.regions)

    def to_input(self, **changes: Any) -> ReviewInput:
        """A ``ReviewInput`` carrying this review's values, e.g. as the starting point of an amendment."""
        values = {
            "reviewer": self.reviewer,
            "case_hash": self.case_hash,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "weights_sha256": self.weights_sha256,
            "predicted_probabilities": dict(self.predicted_probabilities),
            "predicted_label": self.predicted_label,
            "verdict": self.verdict,
            "confidence": self.confidence,
            "corrected_label": self.corrected_label if self.verdict == "disagree" else None,
            "note": self.note,
            "where_wrong": self.where_wrong,
            "task": self.task,
            "slice_view": self.slice_view,
            "slice_index": self.slice_index,
            "regions": self.regions,
        }
        values.update(changes)
        return ReviewInput(**values)


@dataclass(frozen=True, kw_only=True)
class ReviewFilters:
    """All criteria are optional and combined with AND. Text criteria match exactly; blank means any.

    ``date_from`` / ``date_to`` bound ``created_at`` (UTC): a ``date`` covers that whole UTC day (both
    ends inclusive); a ``datetime`` is an exact bound (naive means UTC). ``case_hash_prefix`` is 1-64
    hex digits. ``task`` is one of ``TASKS``.
    """

    task: str | None = None
    reviewer: str | None = None
    verdict: str | None = None
    predicted_label: str | None = None
    corrected_label: str | None = None
    model_name: str | None = None
    date_from: date | datetime | None = None
    date_to: date | datetime | None = None
    case_hash_prefix: str | None = None


# --------------------------------------------------------------------------------------------------
# Validation helpers


def _reviewer(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReviewValidationError("reviewer", "Enter the reviewer's name.")
    value = value.strip()
    if len(value) > REVIEWER_MAX:
        raise ReviewValidationError(
            "reviewer", f"Reviewer name is too long ({len(value)} characters, at most {REVIEWER_MAX})."
        )
    if not value.isprintable():
        raise ReviewValidationError("reviewer", "Reviewer name must be a single line of text.")
    return value


def _sha256(field_name: str, title: str, value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _HEX64.match(text):
        raise ReviewValidationError(
            field_name, f"{title} must be a SHA-256 digest: 64 hexadecimal characters."
        )
    return text


def _short_text(field_name: str, title: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReviewValidationError(field_name, f"{title} is missing.")
    value = value.strip()
    if len(value) > limit or not value.isprintable():
        raise ReviewValidationError(
            field_name, f"{title} must be one line of at most {limit} characters."
        )
    return value


def _label(field_name: str, value: Any) -> str:
    title = field_name.replace("_", " ").capitalize()
    return _short_text(field_name, title, value, LABEL_MAX)


def _probabilities(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ReviewValidationError(
            "predicted_probabilities",
            "Predicted probabilities must be a non-empty mapping of class name to probability.",
        )
    result: dict[str, float] = {}
    for key, prob in value.items():
        if not isinstance(key, str) or not key.strip() or len(key.strip()) > LABEL_MAX:
            raise ReviewValidationError(
                "predicted_probabilities", f"Class name {key!r} is not a valid label."
            )
        key = key.strip()
        if key in EXTRA_LABELS:
            raise ReviewValidationError(
                "predicted_probabilities",
                f"{key!r} is reserved for corrections and cannot be a model class.",
            )
        if key in result:
            raise ReviewValidationError(
                "predicted_probabilities", f"Class {key!r} appears twice."
            )
        if isinstance(prob, bool) or not isinstance(prob, numbers.Real):
            raise ReviewValidationError(
                "predicted_probabilities", f"Probability of {key!r} is not a number."
            )
        prob = float(prob)
        if not math.isfinite(prob) or not 0.0 <= prob <= 1.0:
            raise ReviewValidationError(
                "predicted_probabilities", f"Probability of {key!r} must be between 0 and 1."
            )
        result[key] = prob
    return result


def _confidence(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= int(value) <= 5:
        raise ReviewValidationError("confidence", "Confidence must be a whole number from 1 to 5.")
    return int(value)


def _note(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewValidationError("note", "The note must be text.")
    value = value.strip()
    if len(value) > NOTE_MAX:
        raise ReviewValidationError(
            "note", f"The note is too long ({len(value)} characters, at most {NOTE_MAX})."
        )
    return value


def _where_wrong(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReviewValidationError("where_wrong", "'Where the model went wrong' must be text.")
    value = " ".join(value.split())  # one line
    if not value:
        return None
    if len(value) > WHERE_WRONG_MAX:
        raise ReviewValidationError(
            "where_wrong",
            f"'Where the model went wrong' is too long ({len(value)} characters, "
            f"at most {WHERE_WRONG_MAX}); put details in the note.",
        )
    return value


def _task(field_name: str, value: Any) -> str:
    task = value.strip().lower() if isinstance(value, str) else None
    if task not in TASKS:
        raise ReviewValidationError(
            field_name, f"Unknown task; a review comes from one of these pages: {', '.join(TASKS)}."
        )
    return task


SLICE_INDEX_MAX = 99_999  # far beyond any CT series; a larger number is a typing error


def _slice(task: str, view: Any, index: Any) -> tuple[str | None, int | None]:
    """The (view, index) pair of a recorded slice, or (None, None) when none is recorded."""
    if isinstance(view, str):
        view = view.strip().lower() or None
    if view is None and index is None:
        return None, None
    if view is None or index is None:
        raise ReviewValidationError(
            "slice_view" if view is None else "slice_index",
            "A recorded slice needs both its view (axial, coronal or sagittal) and its slice number.",
        )
    if task not in SLICE_TASKS:
        raise ReviewValidationError(
            "slice_view",
            f"Only reviews of a CT volume can record a slice; this review comes from the {TASK_TITLES[task]} page.",
        )
    if view not in SLICE_VIEWS:
        raise ReviewValidationError("slice_view", f"The slice's view must be one of {', '.join(SLICE_VIEWS)}.")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= int(index) <= SLICE_INDEX_MAX:
        raise ReviewValidationError(
            "slice_index", f"The slice number must be a whole number from 0 to {SLICE_INDEX_MAX}."
        )
    return view, int(index)


def _review_uid(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _UID.match(text):
        raise ReviewValidationError("review_uid", "Review id must be 32 hexadecimal characters.")
    return text


def _bound(field_name: str, value: date | datetime | None, *, end: bool) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    if isinstance(value, date):
        day = value + timedelta(days=1) if end else value
        return datetime.combine(day, time.min, tzinfo=timezone.utc)
    raise ReviewValidationError(field_name, "Dates must be dates or datetimes.")


def _filter_clauses(filters: ReviewFilters | None) -> list[ColumnElement[bool]]:
    if filters is None:
        return []
    t = reviews_table.c
    clauses: list[ColumnElement[bool]] = []
    for name in ("reviewer", "predicted_label", "corrected_label", "model_name"):
        value = getattr(filters, name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ReviewValidationError(name, f"Filter {name} must be text.")
        if value.strip():  # a blank text filter means "any"
            clauses.append(t[name] == value.strip())
    if filters.verdict is not None:
        verdict = filters.verdict.strip().lower() if isinstance(filters.verdict, str) else None
        if verdict not in VERDICTS:
            raise ReviewValidationError("verdict", "Verdict filter must be 'agree' or 'disagree'.")
        clauses.append(t.verdict == verdict)
    if filters.task is not None:
        clauses.append(t.task == _task("task", filters.task))
    start = _bound("date_from", filters.date_from, end=False)
    stop = _bound("date_to", filters.date_to, end=True)
    stop_inclusive = isinstance(filters.date_to, datetime)  # a date means "to the end of that day"
    if start is not None and stop is not None and (start > stop or (start == stop and not stop_inclusive)):
        raise ReviewValidationError("date_to", "The end date is before the start date.")
    if start is not None:
        clauses.append(t.created_at >= start)
    if stop is not None:
        clauses.append(t.created_at <= stop if stop_inclusive else t.created_at < stop)
    if filters.case_hash_prefix is not None and filters.case_hash_prefix != "":
        prefix = filters.case_hash_prefix.strip().lower() if isinstance(filters.case_hash_prefix, str) else ""
        if not _HEX_PREFIX.match(prefix):
            raise ReviewValidationError(
                "case_hash_prefix", "Case hash prefix must be 1 to 64 hexadecimal characters."
            )
        clauses.append(t.case_hash.startswith(prefix, autoescape=True))
    return clauses


# --------------------------------------------------------------------------------------------------
# Engine, transactions, migrations


def make_engine(url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """SQLite engine with WAL, busy_timeout, foreign keys and BEGIN emitted by SQLAlchemy."""
    engine = create_engine(url)
    busy_ms = max(0, int(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 must not emit BEGIN / COMMIT on its own
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode not in _BEGIN_MODES:
            raise ValueError(f"unknown BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside ``BEGIN IMMEDIATE``: committed on success, rolled back on any error."""
    with engine.connect() as conn:
        conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a deferred ``BEGIN``: one consistent snapshot for all its queries."""
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration built in code (no alembic.ini): script_location and sqlalchemy.url."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _describe(error: BaseException, action: str, location: str, busy_timeout_s: float) -> str:
    original = getattr(error, "orig", None) or error
    text = str(original).lower()
    if "append-only" in text:
        return "Reviews cannot be changed or deleted; save an amendment instead."
    if "locked" in text or "busy" in text:
        return (
            f"The review log is busy: another user or process kept it locked for more than "
            f"{busy_timeout_s:g} s. Nothing was {action}; please try again in a moment."
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"The review log {location} is read-only, so nothing was {action}. "
            "Ask an administrator to make the file and its folder writable."
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"The review log file {location} is damaged or is not a review database. It was left "
            "untouched; restore it from a backup or point CHEST_REVIEW_DB to another file."
        )
    if "unable to open" in text or "permission" in text:
        return (
            f"The review log {location} cannot be opened (missing folder or no permission). "
            f"Nothing was {action}."
        )
    if "disk is full" in text or "disk i/o" in text:
        return f"The disk holding the review log {location} is full or failing. Nothing was {action}."
    if "already exists" in text:
        return (
            f"The database {location} already holds a 'reviews' table that this app did not "
            "create. Point CHEST_REVIEW_DB to another file."
        )
    if "unique constraint" in text:
        return f"Another change to this review was saved at the same moment. Nothing was {action}; please retry."
    return f"The review log could not be used, nothing was {action}: {original}"


# --------------------------------------------------------------------------------------------------
# The store

CSV_COLUMNS = (
    "id",
    "review_uid",
    "version",
    "supersedes_id",
    "is_current",
    "created_at",
    "task",
    "reviewer",
    "case_hash",
    "model_name",
    "model_version",
    "weights_sha256",
    "predicted_label",
    "verdict",
    "corrected_label",
    "confidence",
    "where_wrong",
    "slice_view",
    "slice_index",
    "note",
    "regions",  # JSON array of the review's regions (core.reviews.regions.regions_to_json), "[]" for none
)


class ReviewStore:
    """Append-only review log. Thread-safe (one engine, pooled connections); safe across processes.

    Opening runs Alembic ``upgrade head``, so a new file is created and an older one is migrated.
    ``clock`` (returning an aware datetime) exists for tests; callers never set ``created_at``.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError as error:
            raise ReviewStorageError(f"The review log address {url!r} is not a valid database URL.") from error
        if parsed.get_backend_name() != "sqlite":
            raise ReviewStorageError(
                f"The review log must be a SQLite database; {parsed.get_backend_name()!r} is not supported."
            )
        self._location = f"({parsed.database})" if parsed.database else "(in memory)"
        self._engine = make_engine(url, busy_timeout_s)
        try:
            self._migrate()
        except BaseException:
            self._engine.dispose()
            raise

    # ---- lifecycle

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReviewStore({self.url!r})"

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except ReviewLogError:
            raise
        except (sa_exc.SQLAlchemyError, sqlite3.Error, OSError) as error:
            raise ReviewStorageError(
                _describe(error, action, self._location, self.busy_timeout_s)
            ) from error

    def _migrate(self) -> None:
        cfg = alembic_config(self.url)
        script = ScriptDirectory.from_config(cfg)
        heads = set(script.get_heads())
        known = {rev.revision for rev in script.walk_revisions()}
        with self._guard("opened"):
            with read_transaction(self._engine) as conn:
                current = set(MigrationContext.configure(conn).get_current_heads())
            if current == heads:
                return
            if current - known:
                raise ReviewStorageError(
                    f"The review log {self._location} was written by a newer version of this app "
                    f"(schema {', '.join(sorted(current - known))}). Update the app; the file was left untouched."
                )
            with write_transaction(self._engine) as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")  # re-reads the version inside the write lock

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ReviewLogError("The review clock must return a timezone-aware datetime.")
        return now.astimezone(timezone.utc)

    # ---- writes

    def add_review(self, review: ReviewInput) -> Review:
        """Store a new review (version 1) and return it."""
        values = review.validated()
        with self._guard("saved"), write_transaction(self._engine) as conn:
            return self._insert(
                conn, values, review_uid=uuid.uuid4().hex, version=1, supersedes_id=None
            )

    def amend_review(
        self, review_uid: str, review: ReviewInput, *, expected_version: int | None = None
    ) -> Review:
        """Store a corrected version of a review; the earlier versions stay untouched.

        The amendment must describe the same case and model prediction. With ``expected_version``
        (the version the reviewer was looking at), a concurrent amendment raises ``ReviewConflictError``
        instead of being silently superseded.
        """
        uid = _review_uid(review_uid)
        values = review.validated()
        with self._guard("saved"), write_transaction(self._engine) as conn:
            t = reviews_table.c
            latest = (
                conn.execute(
                    select(reviews_table)
                    .where(t.review_uid == uid)
                    .order_by(t.version.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if latest is None:
                raise ReviewNotFoundError(f"There is no review with id {uid}.")
            if expected_version is not None and latest["version"] != expected_version:
                raise ReviewConflictError(
                    f"This review was changed by {latest['reviewer']} (now version {latest['version']}) "
                    "while you were editing it. Reload it and amend again."
                )
            _check_same_prediction(latest, values)
            return self._insert(
                conn,
                values,
                review_uid=uid,
                version=latest["version"] + 1,
                supersedes_id=latest["id"],
            )

    def _insert(
        self,
        conn: Connection,
        values: dict[str, Any],
        *,
        review_uid: str,
        version: int,
        supersedes_id: int | None,
    ) -> Review:
        values = dict(values)
        regions = values.pop("regions", ())
        row = (
            conn.execute(
                insert(reviews_table)
                .values(
                    review_uid=review_uid,
                    version=version,
                    supersedes_id=supersedes_id,
                    created_at=self._now(),
                    **values,
                )
                .returning(*reviews_table.c)
            )
            .mappings()
            .one()
        )
        _insert_regions(conn, row["id"], regions)
        return _to_review(row, regions)

    # ---- reads

    def current_reviews(self, filters: ReviewFilters | None = None) -> list[Review]:
        """The latest version of each review matching ``filters``, newest first.

        Filters apply to the latest version: a review whose amendment no longer matches is left out.
        """
        clauses = _filter_clauses(filters)
        with self._guard("read"), read_transaction(self._engine) as conn:
            rows = conn.execute(_current_select(clauses)).mappings().all()
            regions = _regions_of(conn, _current_select(clauses).with_only_columns(reviews_table.c.id))
        return [_to_review(row, regions.get(row["id"], ())) for row in rows]

    def history(self, review_uid: str) -> list[Review]:
        """All versions of one review, oldest first."""
        uid = _review_uid(review_uid)
        t = reviews_table.c
        with self._guard("read"), read_transaction(self._engine) as conn:
            rows = (
                conn.execute(select(reviews_table).where(t.review_uid == uid).order_by(t.version))
                .mappings()
                .all()
            )
            regions = _regions_of(conn, select(t.id).where(t.review_uid == uid))
        if not rows:
            raise ReviewNotFoundError(f"There is no review with id {uid}.")
        return [_to_review(row, regions.get(row["id"], ())) for row in rows]

    def export_csv(self, filters: ReviewFilters | None = None, include_history: bool = False) -> str:
        """CSV text (header + one line per row) of the current reviews matching ``filters``.

        With ``include_history`` every version of those reviews is written (oldest first, grouped per
        review); ``is_current`` tells which line is the latest. Probabilities are flattened to one
        ``prob_<class>`` column per class seen (the app's classes first). Text cells starting with
        ``= + - @`` are prefixed with ``'`` so spreadsheets do not run them as formulas.
        """
        clauses = _filter_clauses(filters)
        with self._guard("read"), read_transaction(self._engine) as conn:
            t = reviews_table.c
            uids = _current_select(clauses).with_only_columns(t.review_uid)
            regions = _regions_of(conn, select(t.id).where(t.review_uid.in_(uids)))
            current = [
                _to_review(r, regions.get(r["id"], ())) for r in conn.execute(_current_select(clauses)).mappings()
            ]
            if include_history:
                every = conn.execute(
                    select(reviews_table).where(t.review_uid.in_(uids)).order_by(t.review_uid, t.version)
                ).mappings()
                by_uid: dict[str, list[Review]] = {}
                for row in every:
                    by_uid.setdefault(row["review_uid"], []).append(_to_review(row, regions.get(row["id"], ())))
                rows = [version for review in current for version in by_uid.get(review.review_uid, [review])]
            else:
                rows = current
        current_ids = {review.id for review in current}
        return _to_csv(rows, current_ids)


# --------------------------------------------------------------------------------------------------
# Helpers


def _current_select(clauses: list[ColumnElement[bool]]):
    t = reviews_table
    newer = reviews_table.alias("newer")
    latest_only = ~exists().where(newer.c.review_uid == t.c.review_uid, newer.c.version > t.c.version)
    return select(t).where(latest_only, *clauses).order_by(t.c.created_at.desc(), t.c.id.desc())


def _to_review(row: Mapping[str, Any], regions: tuple[Region, ...] = ()) -> Review:
    values = dict(row)
    values["predicted_probabilities"] = dict(values["predicted_probabilities"])
    return Review(**values, regions=regions)


def _insert_regions(conn: Connection, review_id: int, regions: tuple[Region, ...]) -> None:
    """The review row's regions, in the caller's transaction (so both are saved or neither)."""
    if regions:
        conn.execute(insert(review_regions_table), [
            {"review_id": review_id, "ordinal": ordinal, "kind": region.kind, "tag": region.tag,
             "points": [[x, y] for x, y in region.points], "slice_view": region.slice_view,
             "slice_index": region.slice_index}
            for ordinal, region in enumerate(regions)
        ])


def _regions_of(conn: Connection, review_ids) -> dict[int, tuple[Region, ...]]:
    """Regions of the review rows whose ids ``review_ids`` (a SELECT of ids) yields, by review row id."""
    r = review_regions_table.c
    found: dict[int, list[Region]] = {}
    for row in conn.execute(
        select(review_regions_table).where(r.review_id.in_(review_ids)).order_by(r.review_id, r.ordinal)
    ).mappings():
        found.setdefault(row["review_id"], []).append(Region(
            kind=row["kind"], tag=row["tag"], points=tuple((float(x), float(y)) for x, y in row["points"]),
            slice_view=row["slice_view"], slice_index=row["slice_index"]))
    return {review_id: tuple(regions) for review_id, regions in found.items()}


def _check_same_prediction(latest: Mapping[str, Any], values: dict[str, Any]) -> None:
    titles = {
        "task": "page (task)",
        "case_hash": "case",
        "model_name": "model name",
        "model_version": "model version",
        "weights_sha256": "model weights",
        "predicted_label": "predicted label",
    }
    for name, title in titles.items():
        if latest[name] != values[name]:
            raise ReviewValidationError(
                name,
                f"An amendment must be about the same case and model prediction as the original "
                f"review, but the {title} differs. Start a new review instead.",
            )
    old, new = latest["predicted_probabilities"], values["predicted_probabilities"]
    if set(old) != set(new) or any(not math.isclose(old[k], new[k], abs_tol=1e-9) for k in old):
        raise ReviewValidationError(
            "predicted_probabilities",
            "An amendment must keep the model's predicted probabilities of the original review.",
        )


def _class_columns(rows: list[Review]) -> list[str]:
    seen: set[str] = set()
    for review in rows:
        seen.update(review.predicted_probabilities)
    known = [name for name in MANET_CLASSES if name in seen]
    return known + sorted(seen - set(known))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_CSV_FORMULA_START):
        return "'" + value
    return value


def _to_csv(rows: list[Review], current_ids: set[int]) -> str:
    classes = _class_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"prob_{name}" for name in classes)])
    for review in rows:
        base = {name: getattr(review, name) for name in CSV_COLUMNS if name not in ("is_current", "regions")}
        base["is_current"] = review.id in current_ids
        base["regions"] = regions_to_json(review.regions)
        line = [_cell(base[name]) for name in CSV_COLUMNS]
        line += [
            repr(review.predicted_probabilities[name]) if name in review.predicted_probabilities else ""
            for name in classes
        ]
        writer.writerow(line)
    return buffer.getvalue()
