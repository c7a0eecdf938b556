"""Review log: radiologists' verdicts on model predictions, append-only, on SQLite or PostgreSQL.

Public API::

    from core.reviews import ReviewStore, ReviewInput, ReviewFilters, Review

    store = ReviewStore(core.settings.review_db_url())   # runs the Alembic migrations on open
    store.add_review(ReviewInput) -> Review
    store.amend_review(review_uid, ReviewInput, *, expected_version=None) -> Review
    store.current_reviews(ReviewFilters | None) -> list[Review]
    store.history(review_uid) -> list[Review]
    store.export_csv(ReviewFilters | None, include_history=False) -> str

Every review records the page it was made on: ``ReviewInput.task`` / ``Review.task`` /
``ReviewFilters.task``, one of ``TASKS`` = ``("cxr", "ct-slice", "ct-volume")`` (default ``"cxr"``);
``TASK_TITLES`` holds their display names ("Chest X-ray", "CT slice", "CT volume").
A CT-volume review may also record the slice where the model went wrong: ``slice_view`` (one of
``SLICE_VIEWS`` = ``("axial", "coronal", "sagittal")``) and ``slice_index`` (0-based, canonical frame).
A review may carry regions the reviewer drew (``ReviewInput.regions`` / ``Review.regions``, tuples of
``Region``: kind, tag, points in the image's pixels; see ``core.reviews.regions``), stored in the
``review_regions`` table with the review and exported as the CSV's ``regions`` column (JSON);
``regions_mask`` turns them into a label mask, ``shapes_from_fabric`` (``core.reviews.canvas_drawing``)
reads the page's drawing canvas.

Errors are ``core.errors.ReviewLogError`` subclasses: ``ReviewValidationError`` (bad input, has
``.field``), ``ReviewNotFoundError``, ``ReviewConflictError``, ``ReviewStorageError`` (database busy,
read-only, corrupt, or from a newer app version; PostgreSQL server unreachable, login refused, no such
database). Their messages are meant for the user and never show the URL's password.

Migrations live in ``core/reviews/migrations`` (no alembic.ini); command line:
``python -m core.reviews upgrade head`` / ``current`` / ``history`` (see ``migrations/env.py``).
"""

from core.reviews.regions import REGION_KINDS, REGION_TAGS, TAG_VALUES, Region, regions_mask, regions_to_json
from core.reviews.schema import DEFAULT_TASK, EXTRA_LABELS, SLICE_VIEWS, TASK_TITLES, TASKS, VERDICTS, ReviewRow
from core.reviews.store import (
    CSV_COLUMNS,
    Review,
    ReviewConflictError,
    ReviewFilters,
    ReviewInput,
    ReviewNotFoundError,
    ReviewStorageError,
    ReviewStore,
    ReviewValidationError,
    alembic_config,
)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_TASK",
    "EXTRA_LABELS",
    "REGION_KINDS",
    "REGION_TAGS",
    "Region",
    "SLICE_VIEWS",
    "VERDICTS",
    "Review",
    "ReviewConflictError",
    "ReviewFilters",
    "ReviewInput",
    "ReviewNotFoundError",
    "ReviewRow",
    "ReviewStorageError",
    "ReviewStore",
    "ReviewValidationError",
    "TASKS",
    "TASK_TITLES",
    "TAG_VALUES",
    "alembic_config",
    "regions_mask",
    "regions_to_json",
]
