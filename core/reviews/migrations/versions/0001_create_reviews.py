"""Create the append-only ``reviews`` table.

Revision ID: 0001
Revises:
Create Date: hand-written

Mirrors ``core.reviews.schema.ReviewRow``. Triggers make the table append-only: any UPDATE or DELETE
of a row aborts the statement (and the caller's transaction rolls back).

- SQLite: ``reviews_no_update`` / ``reviews_no_delete`` call ``RAISE(ABORT, ...)``.
- PostgreSQL: the same two trigger names, ``BEFORE ... FOR EACH ROW``, run the plpgsql function
  ``reviews_append_only()`` which raises an exception; a third, ``reviews_no_truncate`` (``BEFORE
  TRUNCATE``, per statement), closes the one way around row triggers that SQLite does not have.
  Nothing stops a superuser from dropping the triggers; they guard against mistakes, not attacks.

Every message contains "append-only", which the store turns into a message for the user.
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


# PostgreSQL: one function for all three triggers; TG_OP says which statement was refused.
PG_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION reviews_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'reviews are append-only: amend a review instead of updating it'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RAISE EXCEPTION 'reviews are append-only: rows cannot be deleted (%)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$
"""

PG_TRIGGERS = {
    "reviews_no_update": "BEFORE UPDATE ON reviews FOR EACH ROW",
    "reviews_no_delete": "BEFORE DELETE ON reviews FOR EACH ROW",
    "reviews_no_truncate": "BEFORE TRUNCATE ON reviews FOR EACH STATEMENT",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the review log migrations support SQLite and PostgreSQL, not {dialect}")
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
    if dialect == "postgresql":
        op.execute(PG_APPEND_ONLY_FUNCTION)
        for name, when in PG_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION reviews_append_only()")
    else:
        op.execute(NO_UPDATE_TRIGGER)
        op.execute(NO_DELETE_TRIGGER)


def downgrade() -> None:
    # DROP TABLE does not fire DELETE triggers, but drop them first so nothing depends on the table.
    if op.get_bind().dialect.name == "postgresql":
        for name in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON reviews")
        op.execute("DROP FUNCTION IF EXISTS reviews_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS reviews_no_delete")
        op.execute("DROP TRIGGER IF EXISTS reviews_no_update")
    op.drop_index("ix_reviews_reviewer", table_name="reviews")
    op.drop_index("ix_reviews_created_at", table_name="reviews")
    op.drop_index("ix_reviews_case_hash", table_name="reviews")
    op.drop_table("reviews")
