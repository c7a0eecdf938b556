"""SQLAlchemy model of ``review_regions``: the regions drawn with a review (migration ``0004``).

One row per region, on the review log's ``Base``: ``review_id`` is the ``reviews.id`` of the review
row (one version of a review) it belongs to, ``ordinal`` its 0-based place in drawing order. Rows
are written in the same transaction as their review row and never change (append-only, like
``reviews``: on SQLite triggers abort any UPDATE or DELETE; on PostgreSQL a trigger function does).
An amendment is a new review row with its own regions; the earlier version keeps its regions.

``points`` is a JSON array of ``[x, y]`` pairs in the image's pixels; see ``core.reviews.regions``.
``slice_view`` / ``slice_index``: both NULL except for regions drawn on a CT volume's slice.
"""

from __future__ import annotations

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.reviews.regions import KIND_MAX, REGION_KINDS, REGION_SLICE_VIEWS, REGION_TAGS, TAG_MAX
from core.reviews.schema import Base

_KIND_LIST = ", ".join(f"'{kind}'" for kind in REGION_KINDS)
_TAG_LIST = ", ".join(f"'{tag}'" for tag in REGION_TAGS)
_VIEW_LIST = ", ".join(f"'{view}'" for view in REGION_SLICE_VIEWS)


class ReviewRegionRow(Base):
    """One region of one review row. Rows are immutable once inserted."""

    __tablename__ = "review_regions"
    __table_args__ = (
        UniqueConstraint("review_id", "ordinal", name="uq_review_regions_review_id_ordinal"),
        CheckConstraint("ordinal >= 0", name="ck_review_regions_ordinal"),
        CheckConstraint(f"kind IN ({_KIND_LIST})", name="ck_review_regions_kind"),
        CheckConstraint(f"tag IN ({_TAG_LIST})", name="ck_review_regions_tag"),
        CheckConstraint("slice_index IS NULL OR slice_index >= 0", name="ck_review_regions_slice_index"),
        CheckConstraint(f"slice_view IS NULL OR slice_view IN ({_VIEW_LIST})", name="ck_review_regions_slice_view"),
        CheckConstraint("(slice_index IS NULL) = (slice_view IS NULL)", name="ck_review_regions_slice_pair"),
        Index("ix_review_regions_review_id", "review_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    review_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("reviews.id", name="fk_review_regions_review_id"), nullable=False
    )
    ordinal: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(KIND_MAX), nullable=False)
    tag: Mapped[str] = mapped_column(String(TAG_MAX), nullable=False)
    points: Mapped[list] = mapped_column(JSON, nullable=False)
    slice_view: Mapped[str | None] = mapped_column(String(16), nullable=True)
    slice_index: Mapped[int | None] = mapped_column(Integer, nullable=True)


review_regions_table = ReviewRegionRow.__table__
