"""Create the append-only ``reviews`` table.

Revision ID: 0001
Revises:
Create Date: hand-written

Mirrors ``core.reviews.schema.ReviewRow``. On SQLite, two triggers make the table append-only:
any UPDATE or DELETE of a row aborts the statement (and the caller's transaction rolls back).
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

NO_UPDATE_TRIGGER = """
CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
BEGIN
    SELECT RAISE(ABORT, 'reviews are append-only: amend a review instead of updating it');
END
"""

NO_DELETE_TRIGGER = """
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
BEGIN
    SELECT RAISE(ABORT, 'reviews are append-only: rows cannot be deleted');
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        raise NotImplementedError("the review log migrations support SQLite only")
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("review_uid", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "supersedes_id",
            sa.Integer(),
            sa.ForeignKey("reviews.id", name="fk_reviews_supersedes_id"),
            nullable=True,
        ),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("case_hash", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("predicted_probabilities", sa.JSON(), nullable=False),
        sa.Column("predicted_label", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("corrected_label", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("where_wrong", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("review_uid", "version", name="uq_reviews_review_uid_version"),
        sa.CheckConstraint("version >= 1", name="ck_reviews_version_positive"),
        sa.CheckConstraint(
            "(version = 1 AND supersedes_id IS NULL) OR (version > 1 AND supersedes_id IS NOT NULL)",
            name="ck_reviews_supersedes",
        ),
        sa.CheckConstraint("verdict IN ('agree', 'disagree')", name="ck_reviews_verdict"),
        sa.CheckConstraint("confidence BETWEEN 1 AND 5", name="ck_reviews_confidence"),
        sa.CheckConstraint("length(case_hash) = 64", name="ck_reviews_case_hash_length"),
        sa.CheckConstraint("length(reviewer) BETWEEN 1 AND 100", name="ck_reviews_reviewer_length"),
        sa.CheckConstraint("length(note) <= 2000", name="ck_reviews_note_length"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_reviews_case_hash", "reviews", ["case_hash"])
    op.create_index("ix_reviews_created_at", "reviews", ["created_at"])
    op.create_index("ix_reviews_reviewer", "reviews", ["reviewer"])
    op.execute(NO_UPDATE_TRIGGER)
    op.execute(NO_DELETE_TRIGGER)


def downgrade() -> None:
    # DROP TABLE does not fire DELETE triggers, but drop them first so nothing depends on the table.
    op.execute("DROP TRIGGER IF EXISTS reviews_no_delete")
    op.execute("DROP TRIGGER IF EXISTS reviews_no_update")
    op.drop_index("ix_reviews_reviewer", table_name="reviews")
    op.drop_index("ix_reviews_created_at", table_name="reviews")
    op.drop_index("ix_reviews_case_hash", table_name="reviews")
    op.drop_table("reviews")
