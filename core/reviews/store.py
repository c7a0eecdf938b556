"""``ReviewStore``: the append-only review log on SQLite (the default) or PostgreSQL (for teams).

Usage::

    store = ReviewStore(core.settings.review_db_url())      # creates / migrates the file or database
    review = store.add_review(ReviewInput(...))             # version 1
    store.amend_review(review.review_uid, ReviewInput(...)) # version 2, supersedes version 1
    store.current_reviews(ReviewFilters(verdict="disagree"))
    store.history(review.review_uid)
    csv_text = store.export_csv(ReviewFilters(), include_history=True)

The URL picks the database: ``sqlite:///var/reviews.sqlite`` or
``postgresql+psycopg://user:password@host:5432/reviews`` (``postgresql://`` means the same: psycopg 3 is
the only PostgreSQL driver shipped). On PostgreSQL the database must exist; the store creates its tables.

Concurrency, SQLite: every connection runs ``PRAGMA journal_mode=WAL`` and ``PRAGMA busy_timeout``;
sqlite3's own transaction handling is switched off (``isolation_level = None``) and SQLAlchemy's
``begin`` event emits ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for writes (the write lock is taken before
the latest version is read, so version numbers of amendments are race-free across processes) and a
plain deferred ``BEGIN`` for reads (a consistent snapshot; WAL readers never block writers).

Concurrency, PostgreSQL: the same two kinds of transaction. A write transaction first takes one
transaction-scoped advisory lock (``pg_advisory_xact_lock``), so writers run one at a time exactly as
under ``BEGIN IMMEDIATE``, and runs at READ COMMITTED, so every statement after the lock sees all
earlier commits; a read transaction runs at REPEATABLE READ (one snapshot) and never waits for
writers. ``busy_timeout_s`` becomes ``lock_timeout``. Why a lock rather than the alternatives is
explained at ``_PG_WRITE_LOCK_KEY``.

Every database failure is re-raised as ``ReviewStorageError`` (a ``ReviewLogError``) with a message
for the user (server unreachable, login refused, busy, read-only, ...; never the URL's password); a
failed write rolls back and leaves existing rows as they were. The store never deletes, truncates or
re-creates the database file or its tables.
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
from sqlalchemy.engine import URL, Connection, make_url
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
BACKENDS = ("sqlite", "postgresql")  # SQLAlchemy backend names the store runs on
POSTGRESQL_DRIVER = "psycopg"  # psycopg 3, the one PostgreSQL driver in requirements.txt
DEFAULT_CONNECT_TIMEOUT_S = 10  # PostgreSQL: give up on an unreachable server after this long
# PostgreSQL: a session that sits inside a transaction this long (a frozen or stopped process) is
# ended by the server, so it cannot hold the write lock for everyone else indefinitely.
IDLE_IN_TRANSACTION_TIMEOUT_S = 60
# PostgreSQL: the advisory lock every write transaction takes first (the bytes of "chestrvw").
# Why one lock for all writes, rather than what PostgreSQL offers per row:
# - SELECT ... FOR UPDATE on the latest version does not work on an append-only table: a second
#   amender waits for the lock, then gets the same (old) latest row, because the row it locked was
#   never changed and the new version is not in its statement's snapshot; its insert then collides.
# - Relying on the unique (review_uid, version) constraint, or running SERIALIZABLE, turns every
#   collision into an error, so every caller (and every table other features add to this database)
#   would need a retry loop.
# - This lock gives PostgreSQL exactly SQLite's BEGIN IMMEDIATE semantics: read-then-write code is
#   race-free on both backends, no retries; READ COMMITTED lets each statement after the lock see
#   every earlier commit. Readers (MVCC snapshots) never wait for it. It is released at commit or
#   rollback, and by the server when a writer's connection dies (e.g. the process was killed).
#   Writes are serialised, which a review log of a team (a few writes a second) never notices.
_PG_WRITE_LOCK_KEY = int.from_bytes(b"chestrvw", "big")
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


def engine_url(url: str | URL) -> URL:
    """The SQLAlchemy URL the store connects to; raises ``ReviewStorageError`` for anything it cannot use.

    ``postgresql://`` (SQLAlchemy's default driver would be psycopg2) becomes ``postgresql+psycopg://``.
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as error:
        raise ReviewStorageError(
            f"The review log address {hide_password(str(url))!r} is not a valid database URL."
        ) from error
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise ReviewStorageError(
            f"The review log must be a SQLite or PostgreSQL database; {backend!r} is not supported."
        )
    if backend == "postgresql":
        driver = parsed.get_driver_name()
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername=f"postgresql+{POSTGRESQL_DRIVER}")
        elif driver != POSTGRESQL_DRIVER:
            raise ReviewStorageError(
                f"PostgreSQL is used through psycopg 3: write the address as "
                f"postgresql+{POSTGRESQL_DRIVER}://... ({driver!r} is not supported)."
            )
    return parsed


def hide_password(url: str) -> str:
    """``url`` with the password of ``scheme://user:password@host`` replaced by ``***`` (also when malformed)."""
    return re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", url)


def make_engine(url: str | URL, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """An engine whose ``write_transaction`` / ``read_transaction`` behave alike on SQLite and PostgreSQL."""
    parsed = engine_url(url)
    if parsed.get_backend_name() == "postgresql":
        return _postgresql_engine(parsed, busy_timeout_s)
    return _sqlite_engine(parsed, busy_timeout_s)


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
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
        conn.exec_driver_sql(f"BEGIN {_begin_mode(conn)}")

    return engine


def _postgresql_engine(url: URL, busy_timeout_s: float) -> Engine:
    """PostgreSQL engine: lock_timeout from ``busy_timeout_s``, one writer at a time, snapshot reads."""
    connect_args: dict[str, Any] = {"application_name": "chest-review"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
    try:
        # pre_ping: a connection the server closed (restart, idle timeout) is replaced, not handed out.
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except ImportError as error:
        raise ReviewStorageError(
            "The review log is on PostgreSQL but its driver (psycopg) is not installed: "
            "pip install -c constraints.txt -r requirements.txt."
        ) from error
    lock_ms = max(1, int(busy_timeout_s * 1000))  # 0 would mean "wait for ever" on PostgreSQL

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                (f"{lock_ms}ms", f"{IDLE_IN_TRANSACTION_TIMEOUT_S}s"),
            )
        dbapi_connection.commit()  # session settings outlive the transaction they were set in

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if _begin_mode(conn) == "IMMEDIATE":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK_KEY})")
        else:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    return engine


def _begin_mode(conn: Connection) -> str:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"unknown BEGIN mode {mode!r}")
    return mode


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection holding the database's write lock: committed on success, rolled back on any error.

    SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the store's advisory lock (see ``_PG_WRITE_LOCK_KEY``).
    """
    with engine.connect() as conn:
        conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a deferred ``BEGIN`` (PostgreSQL: REPEATABLE READ): one snapshot for all its queries."""
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


# PostgreSQL SQLSTATE codes the store explains (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_PG_BUSY = {"55P03", "40P01", "40001", "57014"}  # lock timeout, deadlock, serialization, cancelled
_PG_SHUTDOWN = {"57P01", "57P02", "57P03"}  # admin / crash shutdown, cannot connect now
_PG_UNREACHABLE = (
    "connection refused", "could not connect", "timeout expired", "failed to resolve host",
    "could not translate host name", "name or service not known", "no route to host", "network is unreachable",
    "no such file or directory",  # a unix socket that is not there
)
_PG_CONNECTION_LOST = (
    "server closed the connection", "terminating connection", "connection is closed", "consuming input failed",
    "connection already closed", "ssl syscall error", "connection reset",
)
_PG_LOGIN_REFUSED = (
    "password authentication failed", "no password supplied", "no pg_hba.conf entry", "authentication failed",
    "peer authentication", "ident authentication",
)


def _describe_postgresql(error: BaseException, action: str, server: str, user: str, busy_timeout_s: float) -> str:
    """A message for a PostgreSQL failure. Connection failures carry no SQLSTATE, so their text decides."""
    original = getattr(error, "orig", None) or error
    state = getattr(original, "sqlstate", None)
    text = str(original).lower()
    if "append-only" in text:
        return "Reviews cannot be changed or deleted; save an amendment instead."
    if state in _PG_BUSY:
        return (
            f"The review log is busy: another user or process kept it locked for more than "
            f"{busy_timeout_s:g} s. Nothing was {action}; please try again in a moment."
        )
    if any(marker in text for marker in _PG_LOGIN_REFUSED) or state in {"28P01", "28000"}:
        return (
            f"The database server {server} refused the login of user {user!r}. Check the user name and "
            f"password in CHEST_REVIEW_DB_URL. Nothing was {action}."
        )
    if "does not exist" in text and ("database" in text or "role" in text) and state in {None, "3D000", "28000"}:
        return (
            f"The database server {server} has no such database or user ({_first_line(original)}). Ask an "
            f"administrator to create it; the app creates its tables, not the database. Nothing was {action}."
        )
    if state in _PG_SHUTDOWN or "shutting down" in text or "starting up" in text:
        return (
            f"The database server {server} is shutting down or starting up. Nothing was {action}; "
            "please try again in a moment."
        )
    if any(marker in text for marker in _PG_CONNECTION_LOST):
        return (
            f"The connection to the database server {server} was lost. Nothing was {action}; "
            "please try again (ask an administrator if it keeps happening)."
        )
    if any(marker in text for marker in _PG_UNREACHABLE):
        return (
            f"The database server {server} cannot be reached: is it running, and is the address in "
            f"CHEST_REVIEW_DB_URL right? Nothing was {action}."
        )
    if state == "53300" or "too many clients" in text or "too many connections" in text:
        return (
            f"The database server {server} has no free connection. Nothing was {action}; "
            "please try again in a moment."
        )
    if state == "25006":
        return (
            f"The database server {server} only accepts reads (a standby or read-only server). "
            f"Nothing was {action}; point CHEST_REVIEW_DB_URL to the primary server."
        )
    if state == "42501":
        return (
            f"The database user {user!r} may not use the review tables on {server} ({_first_line(original)}). "
            f"Nothing was {action}; ask an administrator to grant access."
        )
    if state in {"53100", "53200"}:
        return f"The database server {server} is out of disk space or memory. Nothing was {action}."
    if state == "42P07":
        return (
            f"The database on {server} already holds a table that this app did not create. "
            "Point CHEST_REVIEW_DB_URL to another database."
        )
    if state == "23505":
        return f"Another change to this review was saved at the same moment. Nothing was {action}; please retry."
    return f"The review log on {server} could not be used, nothing was {action}: {_first_line(original)}"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


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
        parsed = engine_url(url)
        self.backend = parsed.get_backend_name()  # "sqlite" or "postgresql"
        self._password = parsed.password  # only to scrub it from any message that might quote it
        if self.backend == "postgresql":
            port = f":{parsed.port}" if parsed.port else ""
            self._location = f"{parsed.host or 'local socket'}{port} (database {parsed.database!r})"
            self._user = parsed.username or "(default)"
        else:
            self._location = f"({parsed.database})" if parsed.database else "(in memory)"
        self._engine = make_engine(parsed, busy_timeout_s)
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
        return f"ReviewStore({hide_password(self.url)!r})"

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
            if self.backend == "postgresql":
                message = _describe_postgresql(error, action, self._location, self._user, self.busy_timeout_s)
            else:
                message = _describe(error, action, self._location, self.busy_timeout_s)
            if self._password:
                message = message.replace(self._password, "***")
            raise ReviewStorageError(message) from error

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
                    f"(schema {', '.join(sorted(current - known))}). Update the app; it was left untouched."
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
