"""Create ``cases``: the de-identified case store behind the worklist (issue 11 item 2).

Revision ID: 0005
Revises: 0004
Create Date: hand-written

One row per (case, task) that a reviewer saved: the model's answer at the first save (name, version,
weight digest, label, probabilities, top probability as ``confidence``), the SHA-256 that names the
case's pixel file in the case store folder (``core.cases.store``), when it was saved, when retention
lets it go (``expires_at``) and when the purge removed the pixel file (``purged_at``; the row and the
reviews stay). Nothing in it identifies a patient: the case is known by its content hash only.

Generic SQLAlchemy types and ``op.create_table`` only, so the same revision runs on SQLite and
PostgreSQL. Downgrade drops the table (the pixel files are left in their folder: delete them by hand,
or run ``python -m core.cases purge`` before downgrading).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of core.reviews.schema.TASKS as of this revision.
TASKS = ("cxr", "ct-slice", "ct-volume")


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("case_hash", sa.String(64), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("predicted_label", sa.String(64), nullable=False),
        sa.Column("predicted_probabilities", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("pixel_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("purged_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("case_hash", "task", name="pk_cases"),
        sa.CheckConstraint(f"task IN ({', '.join(repr(t) for t in TASKS)})", name="ck_cases_task"),
        sa.CheckConstraint("length(case_hash) = 64", name="ck_cases_case_hash_length"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_cases_confidence"),
    )
    op.create_index("ix_cases_expires_at", "cases", ["expires_at"])
    op.create_index("ix_cases_model", "cases", ["model_name", "model_version"])
    op.create_index("ix_cases_pixel_sha256", "cases", ["pixel_sha256"])


def downgrade() -> None:
    op.drop_index("ix_cases_pixel_sha256", table_name="cases")
    op.drop_index("ix_cases_model", table_name="cases")
    op.drop_index("ix_cases_expires_at", table_name="cases")
    op.drop_table("cases")
