"""Add ``reviews.slice_index`` and ``reviews.slice_view``: the slice of a CT volume where the model went wrong.

Revision ID: 0003
Revises: 0002
Create Date: hand-written

Both columns are nullable and are NULL together: a review of a CT volume may name one slice, given
by its view (``'axial'``, ``'coronal'`` or ``'sagittal'``) and its 0-based index along that view's
axis in the app's canonical volume frame (axial from the feet up, coronal from the front back,
sagittal from the patient's right to left; see ``core.imaging.volume_views``). Rows written before
this revision read NULL in both, i.e. "no slice recorded", which is what they were.

CHECK constraints keep raw inserts honest too: the view is one of the three, the index is not
negative, and neither is set without the other. As in ``0002``, SQLite's ``ALTER TABLE ... ADD
COLUMN`` changes the schema in place (no table rebuild, the append-only triggers of ``0001`` stay
attached; the CHECKs are tested against existing rows, all NULL). The pairing check belongs to
``slice_view`` (added second, so ``slice_index`` exists when it is declared), which lets downgrade
drop ``slice_view`` first and then ``slice_index`` with ``ALTER TABLE ... DROP COLUMN``: SQLite
refuses to drop a column that another column's CHECK names.

PostgreSQL runs the same statements (it accepts a column CHECK that names another column, and its
``DROP COLUMN`` drops every CHECK naming the column; adding a nullable column fires no trigger).

Downgrade refuses while a review records a slice: the slice would be lost from an append-only log.
Export the log to CSV first and pass ``-x drop_slices=yes``
(``python -m core.reviews -x drop_slices=yes downgrade 0002``) to downgrade anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of core.reviews.schema.SLICE_VIEWS as of this revision.
SLICE_VIEWS = ("axial", "coronal", "sagittal")

ADD_SLICE_INDEX = (
    "ALTER TABLE reviews ADD COLUMN slice_index INTEGER "
    "CONSTRAINT ck_reviews_slice_index CHECK (slice_index IS NULL OR slice_index >= 0)"
)
ADD_SLICE_VIEW = (
    "ALTER TABLE reviews ADD COLUMN slice_view VARCHAR(16) "
    f"CONSTRAINT ck_reviews_slice_view CHECK (slice_view IS NULL OR slice_view IN ({', '.join(f'{v!r}' for v in SLICE_VIEWS)})) "
    "CONSTRAINT ck_reviews_slice_pair CHECK ((slice_index IS NULL) = (slice_view IS NULL))"
)
DROP_COLUMNS = ("ALTER TABLE reviews DROP COLUMN slice_view", "ALTER TABLE reviews DROP COLUMN slice_index")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the review log migrations support SQLite and PostgreSQL, not {dialect}")
    op.execute(ADD_SLICE_INDEX)
    op.execute(ADD_SLICE_VIEW)


def downgrade() -> None:
    _refuse_to_lose_slices()
    for statement in DROP_COLUMNS:
        op.execute(statement)


def _refuse_to_lose_slices() -> None:
    if context.is_offline_mode():  # --sql: no rows to look at
        return
    if context.get_x_argument(as_dictionary=True).get("drop_slices", "").lower() in ("yes", "true", "1"):
        return
    recorded = op.get_bind().exec_driver_sql(
        "SELECT count(*) FROM reviews WHERE slice_index IS NOT NULL"
    ).scalar_one()
    if recorded:
        raise RuntimeError(
            f"The review log holds {recorded} review(s) that record a CT slice; downgrading below 0003 "
            "would lose those slices. Export the log to CSV first, then run "
            "'python -m core.reviews -x drop_slices=yes downgrade 0002' to downgrade anyway."
        )
