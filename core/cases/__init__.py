"""De-identified case store and worklist (issue 11 item 2).

Public API::

    from core.cases import CaseStore, CasePrediction, CaseRecord, CaseImage, WorklistFilters, worklist

    cases = CaseStore(review_store, core.settings.case_store_dir(), retention_days=core.settings.case_retention_days())
    cases.save_case(study_or_volume, CasePrediction(...)) -> CaseRecord     # idempotent per (case, task)
    cases.get_case(case_hash, task) -> CaseRecord | None
    cases.list_cases(task=None) -> list[CaseRecord]
    cases.load_image(record) -> CaseImage        # .to_study() / .to_volume()
    cases.purge(now=None) -> PurgeReport         # retention
    worklist(cases.list_cases(), review_store.current_reviews(), WorklistFilters(...)) -> list[WorklistRow]

Command line: ``python -m core.cases purge`` and ``python -m core.cases seed-demo --db URL`` (see ``__main__``).
"""

from core.cases.store import (
    ALLOWED_METADATA,
    CaseExpiredError,
    CaseImage,
    CaseNotFoundError,
    CasePrediction,
    CaseRecord,
    CaseStore,
    CaseStoreError,
    PurgeReport,
)
from core.cases.worklist import WorklistFilters, WorklistRow, model_versions, worklist, worklist_row

__all__ = [
    "ALLOWED_METADATA",
    "CaseExpiredError",
    "CaseImage",
    "CaseNotFoundError",
    "CasePrediction",
    "CaseRecord",
    "CaseStore",
    "CaseStoreError",
    "PurgeReport",
    "WorklistFilters",
    "WorklistRow",
    "model_versions",
    "worklist",
    "worklist_row",
]


def open_case_store(reviews):
    """The case store of ``core.settings`` (folder and retention) beside the review log ``reviews``."""
    from core.settings import case_retention_days, case_store_dir

    return CaseStore(reviews, case_store_dir(), retention_days=case_retention_days())
