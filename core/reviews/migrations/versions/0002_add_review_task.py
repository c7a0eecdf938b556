"""Add ``reviews.task``: the page (analysis task) a review came from.

Revision ID: 0002
Revises: 0001
Create Date: hand-written

``task`` is ``'cxr'`` (chest X-ray page), ``'ct-slice'`` or ``'ct-volume'``; a CHECK constraint
refuses anything else and ``ix_reviews_task`` serves the Review log's task filter. Every row written
before this revision came from the X-ray page, so the column's server default ``'cxr'`` is what
they read.

Why no batch mode (table rebuild): SQLite's own ``ALTER TABLE ... ADD COLUMN`` accepts a NOT NULL
column with a constant default and a CHECK constraint (checked against the existing rows since
SQLite 3.37), and changes the schema in place: the rows are not copied and the append-only triggers
of ``0001`` stay attached. A batch rebuild would copy the table into ``_alembic_tmp_reviews``, drop
the original (with it the triggers) and rename the copy; with ``PRAGMA foreign_keys = ON`` the
self-referencing ``supersedes_id`` key makes that drop fail, and the pragma cannot be switched off
inside the store's ``BEGIN IMMEDIATE``. Downgrade likewise uses ``ALTER TABLE ... DROP COLUMN``
(SQLite 3.35+), which is allowed because no other constraint, index, trigger or view names ``task``
once its index is dropped.

PostgreSQL runs the same two statements: ``ADD COLUMN`` with a constant default stores the default
in the catalogue (PostgreSQL 11+: no table rewrite, no UPDATE, so the append-only triggers do not
fire) and checks the CHECK against the existing rows; ``DROP COLUMN`` drops the CHECK with it.

Downgrade refuses while a review of another task than ``cxr`` exists: dropping the column would
silently turn CT reviews into X-ray reviews in an append-only log. Export the log to CSV first and
pass ``-x drop_tasks=yes`` (``python -m core.reviews -x drop_tasks=yes downgrade 0001``) to
downgrade anyway.
"""

from __future__ import annotations

from typing import Sequence, Union

from alembic import context, op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Frozen copies of core.reviews.schema's TASKS / DEFAULT_TASK as of this revision: a migration must
# keep producing the same schema even after the model changes.
TASKS = ("cxr", "ct-slice", "ct-volume")
DEFAULT_TASK = "cxr"

ADD_TASK_COLUMN = (
    f"ALTER TABLE reviews ADD COLUMN task VARCHAR(32) DEFAULT '{DEFAULT_TASK}' NOT NULL "
    f"CONSTRAINT ck_reviews_task CHECK (task IN ({', '.join(f'{t!r}' for t in TASKS)}))"
)
DROP_TASK_COLUMN = "ALTER TABLE reviews DROP COLUMN task"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the review log migrations support SQLite and PostgreSQL, not {dialect}")
    op.execute(ADD_TASK_COLUMN)
    op.create_index("ix_reviews_task", "reviews", ["task"])


def downgrade() -> None:
    _refuse_to_lose_tasks()
    op.drop_index("ix_reviews_task", table_name="reviews")
    op.execute(DROP_TASK_COLUMN)


def _refuse_to_lose_tasks() -> None:
    if context.is_offline_mode():  # --sql: no rows to look at
        return
    if context.get_x_argument(as_dictionary=True).get("drop_tasks", "").lower() in ("yes", "true", "1"):
        return
    others = op.get_bind().exec_driver_sql(
        f"SELECT count(*) FROM reviews WHERE task != '{DEFAULT_TASK}'"
    ).scalar_one()
    if others:
        raise RuntimeError(
            f"The review log holds {others} review(s) from the CT pages; downgrading below 0002 "
            "would record them as chest X-ray reviews. Export the log to CSV first, then run "
            "'python -m core.reviews -x drop_tasks=yes downgrade 0001' to downgrade anyway."
        )
