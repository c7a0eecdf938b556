"""SQLAlchemy 2.x declarative model of the review log (one table, ``reviews``).

The table is append-only: a review is never updated or deleted. Correcting a review inserts a new
row of the same ``review_uid`` with ``version + 1`` whose ``supersedes_id`` points at the row it
replaces. Migration ``0001`` installs triggers that abort any UPDATE or DELETE (SQLite and PostgreSQL).

``task`` records which page (analysis task) a review came from: ``cxr`` (chest X-ray page),
``ct-slice`` (CT slice page) or ``ct-volume`` (CT volume page). Migration ``0002`` added it; rows
written before then all came from the X-ray page and read ``cxr``.

``slice_index`` / ``slice_view`` (migration ``0003``, both NULL or both set) name the slice of a CT
volume where the model went wrong: the view (``axial``, ``coronal``, ``sagittal``) and the 0-based
index along that view's axis in the canonical volume frame (``core.imaging.volume_views``: axial
counts from the feet, coronal from the front, sagittal from the patient's right). Only reviews of
the CT volume page carry one.

Nothing here identifies a patient: a case is known only by ``case_hash`` (SHA-256 of the pixel
content, see ``core.study.Study.case_hash``); no file name, no DICOM tag, no image bytes.

The schema is owned by the Alembic migrations in ``core/reviews/migrations``; this model must stay
in step with them (``tests/core/test_reviews.py`` compares the two).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Column sizes, shared with validation in ``store.py`` and the migration.
REVIEWER_MAX = 100
MODEL_FIELD_MAX = 100
LABEL_MAX = 64
NOTE_MAX = 2000
WHERE_WRONG_MAX = 200

TASK_MAX = 32

VERDICTS = ("agree", "disagree")
TASKS = ("cxr", "ct-slice", "ct-volume")  # the pages a review can come from; a new one needs a migration
DEFAULT_TASK = "cxr"  # what every review written before migration 0002 was
TASK_TITLES = {"cxr": "Chest X-ray", "ct-slice": "CT slice", "ct-volume": "CT volume"}
_TASK_LIST = ", ".join(f"'{task}'" for task in TASKS)  # SQL text of the CHECK constraint
SLICE_VIEWS = ("axial", "coronal", "sagittal")  # the views a recorded slice can belong to
SLICE_VIEW_MAX = 16
SLICE_TASKS = ("ct-volume",)  # the pages whose reviews may record a slice
_VIEW_LIST = ", ".join(f"'{view}'" for view in SLICE_VIEWS)
EXTRA_LABELS = ("other", "uncertain")  # allowed as corrected_label besides the model's own classes


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetime on any backend.

    SQLite has no timezone type: values are stored as naive UTC (``YYYY-MM-DD HH:MM:SS.ffffff``, which
    sorts and compares correctly as text) and come back with ``tzinfo=timezone.utc``.
    Naive datetimes are refused on the way in rather than guessed.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class ReviewRow(Base):
    """One version of one review. Rows are immutable once inserted."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("review_uid", "version", name="uq_reviews_review_uid_version"),
        CheckConstraint("version >= 1", name="ck_reviews_version_positive"),
        CheckConstraint(
            "(version = 1 AND supersedes_id IS NULL) OR (version > 1 AND supersedes_id IS NOT NULL)",
            name="ck_reviews_supersedes",
        ),
        CheckConstraint("verdict IN ('agree', 'disagree')", name="ck_reviews_verdict"),
        CheckConstraint("confidence BETWEEN 1 AND 5", name="ck_reviews_confidence"),
        CheckConstraint("length(case_hash) = 64", name="ck_reviews_case_hash_length"),
        CheckConstraint("length(reviewer) BETWEEN 1 AND 100", name="ck_reviews_reviewer_length"),
        CheckConstraint("length(note) <= 2000", name="ck_reviews_note_length"),
        Index("ix_reviews_case_hash", "case_hash"),
        Index("ix_reviews_created_at", "created_at"),
        Index("ix_reviews_reviewer", "reviewer"),
        CheckConstraint(f"task IN ({_TASK_LIST})", name="ck_reviews_task"),
        Index("ix_reviews_task", "task"),
        CheckConstraint("slice_index IS NULL OR slice_index >= 0", name="ck_reviews_slice_index"),
        CheckConstraint(f"slice_view IS NULL OR slice_view IN ({_VIEW_LIST})", name="ck_reviews_slice_view"),
        CheckConstraint("(slice_index IS NULL) = (slice_view IS NULL)", name="ck_reviews_slice_pair"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    review_uid: Mapped[str] = mapped_column(String(32), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    supersedes_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("reviews.id", name="fk_reviews_supersedes_id"), nullable=True
    )
    reviewer: Mapped[str] = mapped_column(String(REVIEWER_MAX), nullable=False)
    case_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    model_name: Mapped[str] = mapped_column(String(MODEL_FIELD_MAX), nullable=False)
    model_version: Mapped[str] = mapped_column(String(MODEL_FIELD_MAX), nullable=False)
    weights_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    predicted_probabilities: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    predicted_label: Mapped[str] = mapped_column(String(LABEL_MAX), nullable=False)
    verdict: Mapped[str] = mapped_column(String(16), nullable=False)
    corrected_label: Mapped[str] = mapped_column(String(LABEL_MAX), nullable=False)
    confidence: Mapped[int] = mapped_column(Integer, nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    where_wrong: Mapped[str | None] = mapped_column(String(WHERE_WRONG_MAX), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Last because migration 0002 appended it with ALTER TABLE ADD COLUMN.
    task: Mapped[str] = mapped_column(String(TASK_MAX), nullable=False, server_default=DEFAULT_TASK)
    # Appended by migration 0003: the CT-volume slice where the model went wrong (both NULL when none).
    slice_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    slice_view: Mapped[str | None] = mapped_column(String(SLICE_VIEW_MAX), nullable=True)


reviews_table = ReviewRow.__table__


# --------------------------------------------------------------------------------------------------
# Logins and roles (migration 0006; used by ``core.auth``). They share the review log's database so
# that one URL (one backup) holds who reviewed and what they said.

USERNAME_MAX = REVIEWER_MAX  # a username becomes ``reviews.reviewer``
PASSWORD_HASH_MAX = 255  # an argon2id PHC string is about 100 characters
ROLES = ("reviewer", "admin")
ROLE_MAX = 16
LOGIN_OUTCOMES = ("success", "failure", "reset")  # "reset": an admin cleared the lockout (new password)
LOGIN_OUTCOME_MAX = 16
USERNAME_KEY_LENGTH = 64  # hex PBKDF2 digest of the typed username (``core.auth.users.username_key``)
_ROLE_LIST = ", ".join(f"'{role}'" for role in ROLES)
_OUTCOME_LIST = ", ".join(f"'{outcome}'" for outcome in LOGIN_OUTCOMES)


class UserRow(Base):
    """A person who signs in. Never deleted (reviews name them); ``active = false`` disables the login.

    ``password_hash`` is an argon2id PHC string (salt and parameters inside); the password itself is
    never stored. ``must_change_password``: the password was set by someone else (first-start admin,
    an admin's reset), so the next sign-in asks for a new one.
    """

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("username", name="uq_users_username"),
        CheckConstraint(f"role IN ({_ROLE_LIST})", name="ck_users_role"),
        CheckConstraint("length(username) BETWEEN 1 AND 100", name="ck_users_username_length"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_MAX), nullable=False)
    role: Mapped[str] = mapped_column(String(ROLE_MAX), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    must_change_password: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LoginAttemptRow(Base):
    """One sign-in attempt, for the lockout that must hold across server processes.

    ``username_key`` is a one-way digest of the username as typed, for known and unknown names alike:
    the lockout then behaves the same whether or not the account exists, and a password typed into
    the username box by mistake is not kept in clear.
    """

    __tablename__ = "login_attempts"
    __table_args__ = (
        CheckConstraint(f"outcome IN ({_OUTCOME_LIST})", name="ck_login_attempts_outcome"),
        Index("ix_login_attempts_key_time", "username_key", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username_key: Mapped[str] = mapped_column(String(USERNAME_KEY_LENGTH), nullable=False)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    outcome: Mapped[str] = mapped_column(String(LOGIN_OUTCOME_MAX), nullable=False)


users_table = UserRow.__table__
login_attempts_table = LoginAttemptRow.__table__


# The case store (migration 0005): one row per (case, task) a reviewer saved, for the worklist.

PIXEL_FILE_MAX = 64  # SHA-256 hex of the stored pixel file


class CaseRow(Base):
    """A de-identified case kept so any reviewer can reopen it (``core.cases``).

    ``pixel_sha256`` names the compressed array file in the case store folder (content-addressed);
    ``purged_at`` is set when retention removed that file (the row and every review stay).
    ``predicted_*`` / ``confidence`` are the model's answer when the case was first saved.
    """

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(f"task IN ({_TASK_LIST})", name="ck_cases_task"),
        CheckConstraint("length(case_hash) = 64", name="ck_cases_case_hash_length"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_cases_confidence"),
        Index("ix_cases_expires_at", "expires_at"),
        Index("ix_cases_model", "model_name", "model_version"),
        Index("ix_cases_pixel_sha256", "pixel_sha256"),
    )

    case_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(TASK_MAX), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(MODEL_FIELD_MAX), nullable=False)
    model_version: Mapped[str] = mapped_column(String(MODEL_FIELD_MAX), nullable=False)
    weights_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    predicted_label: Mapped[str] = mapped_column(String(LABEL_MAX), nullable=False)
    predicted_probabilities: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    pixel_sha256: Mapped[str] = mapped_column(String(PIXEL_FILE_MAX), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


cases_table = CaseRow.__table__
