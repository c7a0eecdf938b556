"""The worklist: which stored cases a reviewer should look at next. Pure functions, no database.

Usage::

    cases = case_store.list_cases()
    reviews = review_store.current_reviews()
    rows = worklist(cases, reviews, WorklistFilters(reviewer="ana", not_reviewed_by_me=True, task="cxr"))
    for row in rows: row.case, row.reviews, row.reviewed_by_me, row.model_disagreement, row.reader_disagreement

A case's reviews are the current reviews with the same ``case_hash`` and ``task``. A reader's label is
``core.reviews.agreement.reader_label`` (the model's label when they agreed, their correction
otherwise), and "the model" is the prediction the review was made on. Flags:

* ``model_disagreement``: some reader's label differs from the model's;
* ``reader_disagreement``: at least two readers gave the case different labels (each reader counts
  with their latest review of the case);
* low confidence: the stored prediction's top probability is below ``WorklistFilters.max_confidence``.

Every filter left at its default lets every case through; the set ones combine with AND. Rows come
newest case first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from core.cases.store import CaseRecord
from core.reviews.agreement import reader_label


@dataclass(frozen=True, kw_only=True)
class WorklistFilters:
    reviewer: str | None = None  # "me": needed by ``not_reviewed_by_me``; also sets ``reviewed_by_me``
    not_reviewed_by_me: bool = False
    model_disagreement: bool = False
    reader_disagreement: bool = False
    max_confidence: float | None = None  # keep cases whose top probability is below this
    model_name: str | None = None
    model_version: str | None = None
    task: str | None = None
    include_purged: bool = False  # cases whose pixels retention has deleted (they cannot be reopened)


@dataclass(frozen=True)
class WorklistRow:
    case: CaseRecord
    reviews: tuple  # current reviews of this case and task, oldest first
    readers: tuple[str, ...]  # who reviewed it, in the order they first did
    reviewed_by_me: bool
    model_disagreement: bool
    reader_disagreement: bool


def latest_per_reader(reviews: Sequence) -> dict[str, object]:
    """Each reader's latest current review (a reader may have reviewed a case more than once)."""
    latest: dict[str, object] = {}
    for review in sorted(reviews, key=lambda r: (r.created_at, r.id)):
        latest[review.reviewer] = review
    return latest


def worklist_row(case: CaseRecord, reviews: Sequence, reviewer: str | None = None) -> WorklistRow:
    """One case with its reviews and flags (``reviews``: the current reviews of this case and task)."""
    ordered = tuple(sorted(reviews, key=lambda r: (r.created_at, r.id)))
    by_reader = latest_per_reader(ordered)
    return WorklistRow(
        case=case,
        reviews=ordered,
        readers=tuple(by_reader),
        reviewed_by_me=bool(reviewer) and reviewer in by_reader,
        model_disagreement=any(reader_label(r) != r.predicted_label for r in ordered),
        reader_disagreement=len({reader_label(r) for r in by_reader.values()}) > 1,
    )


def worklist(
    cases: Sequence[CaseRecord], reviews: Sequence, filters: WorklistFilters | None = None
) -> list[WorklistRow]:
    """The cases matching ``filters``, each with its reviews and flags, newest case first."""
    filters = filters or WorklistFilters()
    if filters.not_reviewed_by_me and not filters.reviewer:
        raise ValueError("'Not yet reviewed by me' needs the reviewer's name.")
    by_case: dict[tuple[str, str], list] = defaultdict(list)
    for review in reviews:
        by_case[(review.case_hash, review.task)].append(review)
    rows = []
    for case in sorted(cases, key=lambda c: (c.created_at, c.case_hash), reverse=True):
        if not _case_matches(case, filters):
            continue
        row = worklist_row(case, by_case.get((case.case_hash, case.task), ()), filters.reviewer)
        if filters.not_reviewed_by_me and row.reviewed_by_me:
            continue
        if filters.model_disagreement and not row.model_disagreement:
            continue
        if filters.reader_disagreement and not row.reader_disagreement:
            continue
        rows.append(row)
    return rows


def _case_matches(case: CaseRecord, filters: WorklistFilters) -> bool:
    if not filters.include_purged and not case.available:
        return False
    if filters.task and case.task != filters.task:
        return False
    if filters.model_name and case.model_name != filters.model_name:
        return False
    if filters.model_version and case.model_version != filters.model_version:
        return False
    return filters.max_confidence is None or case.confidence < filters.max_confidence


def model_versions(cases: Sequence[CaseRecord]) -> dict[str, list[str]]:
    """Model name -> its versions among ``cases`` (sorted): the choices of the worklist's model filter."""
    versions: dict[str, set[str]] = defaultdict(set)
    for case in cases:
        versions[case.model_name].add(case.model_version)
    return {name: sorted(found) for name, found in sorted(versions.items())}
