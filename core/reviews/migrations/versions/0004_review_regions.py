"""Create ``review_regions``: the regions a reviewer drew with a review (issue 11, regions).

Revision ID: 0004
Revises: 0003
Create Date: hand-written

Mirrors ``core.reviews.region_schema.ReviewRegionRow``: one row per region, ``review_id`` the
``reviews.id`` of its review row, ``ordinal`` its place in drawing order, ``kind``, ``tag``, ``points``
(JSON ``[[x, y], ...]`` in image pixels) and, for a CT volume, ``slice_view`` / ``slice_index``.
Existing reviews have no regions, which is what they had.

The table is append-only like ``reviews``: on SQLite two triggers abort any UPDATE or DELETE; on
PostgreSQL one trigger function refuses UPDATE, DELETE and TRUNCATE. Other databases are refused.

Downgrade refuses while a region is stored: it would be lost from an append-only log. Export the log
to CSV first (its ``regions`` column holds them) and pass ``-x drop_regions=yes``
(``python -m core.reviews -x drop_regions=yes downgrade 0003``) to downgrade anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of core.reviews.regions' vocabularies as of this revision.
REGION_KINDS = ("rectangle", "polygon", "freehand")
REGION_TAGS = ("missed finding", "false finding", "wrong location", "other")
SLICE_VIEWS = ("axial", "coronal", "sagittal")

SQLITE_TRIGGERS = {
    "review_regions_no_update": """
CREATE TRIGGER review_regions_no_update BEFORE UPDATE ON review_regions
BEGIN
    SELECT RAISE(ABORT, 'review regions are append-only: amend the review instead of updating them');
END
""",
    "review_regions_no_delete": """
CREATE TRIGGER review_regions_no_delete BEFORE DELETE ON review_regions
BEGIN
    SELECT RAISE(ABORT, 'review regions are append-only: rows cannot be deleted');
END
""",
}

POSTGRESQL_FUNCTION = """
CREATE FUNCTION review_regions_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION 'review regions are append-only: amend the review instead of changing them';
END
$body$
"""
POSTGRESQL_TRIGGERS = {
    "review_regions_no_change": "CREATE TRIGGER review_regions_no_change BEFORE UPDATE OR DELETE ON review_regions "
                                "FOR EACH ROW EXECUTE FUNCTION review_regions_append_only()",
    "review_regions_no_truncate": "CREATE TRIGGER review_regions_no_truncate BEFORE TRUNCATE ON review_regions "
                                  "FOR EACH STATEMENT EXECUTE FUNCTION review_regions_append_only()",
}


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the review log migrations support SQLite and PostgreSQL, not {dialect}")
    op.create_table(
        "review_regions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("review_id", sa.Integer(), sa.ForeignKey("reviews.id", name="fk_review_regions_review_id"),
                  nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("slice_view", sa.String(16), nullable=True),
        sa.Column("slice_index", sa.Integer(), nullable=True),
        sa.UniqueConstraint("review_id", "ordinal", name="uq_review_regions_review_id_ordinal"),
        sa.CheckConstraint("ordinal >= 0", name="ck_review_regions_ordinal"),
        sa.CheckConstraint(f"kind IN ({_quoted(REGION_KINDS)})", name="ck_review_regions_kind"),
        sa.CheckConstraint(f"tag IN ({_quoted(REGION_TAGS)})", name="ck_review_regions_tag"),
        sa.CheckConstraint("slice_index IS NULL OR slice_index >= 0", name="ck_review_regions_slice_index"),
        sa.CheckConstraint(f"slice_view IS NULL OR slice_view IN ({_quoted(SLICE_VIEWS)})",
                           name="ck_review_regions_slice_view"),
        sa.CheckConstraint("(slice_index IS NULL) = (slice_view IS NULL)", name="ck_review_regions_slice_pair"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_review_regions_review_id", "review_regions", ["review_id"])
    if dialect == "sqlite":
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)
    else:
        op.execute(POSTGRESQL_FUNCTION)
        for statement in POSTGRESQL_TRIGGERS.values():
            op.execute(statement)


def downgrade() -> None:
    _refuse_to_lose_regions()
    dialect = op.get_bind().dialect.name
    triggers = SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS
    for name in triggers:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + ("" if dialect == "sqlite" else " ON review_regions"))
    if dialect != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS review_regions_append_only()")
    op.drop_index("ix_review_regions_review_id", table_name="review_regions")
    op.drop_table("review_regions")


def _refuse_to_lose_regions() -> None:
    if context.is_offline_mode():  # --sql: no rows to look at
        return
    if context.get_x_argument(as_dictionary=True).get("drop_regions", "").lower() in ("yes", "true", "1"):
        return
    stored = op.get_bind().exec_driver_sql("SELECT count(*) FROM review_regions").scalar_one()
    if stored:
        raise RuntimeError(
            f"The review log holds {stored} region(s) drawn with reviews; downgrading below 0004 would lose "
            "them. Export the log to CSV first, then run "
            "'python -m core.reviews -x drop_regions=yes downgrade 0003' to downgrade anyway."
        )
