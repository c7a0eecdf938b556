"""Concurrency figures of the review log: N writer processes adding and amending reviews at once.

Usage::

    python -m core.reviews stress --url postgresql+psycopg://user@127.0.0.1:5432/scratch --writers 8 --reviews 250
    python -m core.reviews stress --url sqlite:////tmp/scratch.sqlite

    report = run_stress(url, writers=8, reviews_per_writer=250)   # StressReport
    print(report.summary()); assert report.ok

Each writer process opens its own ``ReviewStore`` and, after all of them are ready, saves
``reviews_per_writer`` new reviews; after every 4th it amends that review (version 2) and after every
10th it amends one review shared by all writers (the contended case: versions must not collide).
Then the parent checks the rows of this run: every save a writer reported is there (none lost), each
writer's reviews number exactly ``reviews_per_writer``, no (review_uid, version) appears twice,
versions run 1..n without gaps and each supersedes the one before. Wall time runs from the moment
all writers start to the last one finishing; ``reviews_per_s`` counts new reviews, ``writes_per_s``
new reviews and amendments.

The log is append-only, so the rows stay: point ``--url`` at a throw-away database. The command
refuses a database that holds reviews other than earlier stress runs'.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text

from core.reviews.store import ReviewInput, ReviewStore, read_transaction

OWN_AMEND_EVERY = 4  # amend one's own review after every 4th add
SHARED_AMEND_EVERY = 10  # amend the review every writer shares after every 10th add
REVIEWER_PREFIX = "stress "  # every row a stress run writes has a reviewer starting with this
_PROBS = {"normal": 0.1, "covid": 0.6, "tb": 0.05, "bacterial": 0.15, "viral": 0.1}


class StressRefused(RuntimeError):
    """The database holds real reviews; a stress run would add rows that can never be removed."""


@dataclass
class StressReport:
    backend: str
    writers: int
    reviews_per_writer: int
    adds: int = 0
    amends: int = 0
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reviews_per_s(self) -> float:
        return self.adds / self.wall_s if self.wall_s else 0.0

    @property
    def writes_per_s(self) -> float:
        return (self.adds + self.amends) / self.wall_s if self.wall_s else 0.0

    def summary(self) -> str:
        lines = [
            f"backend: {self.backend}   writers: {self.writers} processes x {self.reviews_per_writer} reviews",
            f"written: {self.adds} reviews + {self.amends} amendments in {self.wall_s:.2f} s wall time",
            f"throughput: {self.reviews_per_s:.1f} reviews/s, {self.writes_per_s:.1f} writes/s (reviews + amendments)",
        ]
        if self.ok:
            lines.append("check: OK (0 lost, 0 duplicated, versions contiguous, supersedes chains intact)")
        else:
            lines += ["check: FAILED", *(f"  - {problem}" for problem in self.problems)]
        return "\n".join(lines)


def _sha(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def _input(reviewer: str, case: str, **changes) -> ReviewInput:
    values = dict(
        reviewer=reviewer, case_hash=_sha(case), model_name="stress-model", model_version="1.0",
        weights_sha256=_sha("stress weights"), predicted_probabilities=dict(_PROBS), predicted_label="covid",
        verdict="agree", confidence=3,
    )
    values.update(changes)
    return ReviewInput(**values)


def _writer(url: str, run_id: str, writer: int, reviews: int, shared_uid: str, barrier, results) -> None:
    """One writer process: adds and amends, then reports (review_uid, version) of every save that returned."""
    reviewer = f"{REVIEWER_PREFIX}{run_id} w{writer}"
    saved: list[tuple[str, int]] = []
    errors: list[str] = []
    store = ReviewStore(url)
    try:
        shared = store.history(shared_uid)[0]
        barrier.wait(timeout=300)
        for i in range(1, reviews + 1):
            try:
                review = store.add_review(_input(reviewer, f"{run_id}-{writer}-{i}"))
                saved.append((review.review_uid, review.version))
                if i % OWN_AMEND_EVERY == 0:
                    amended = store.amend_review(
                        review.review_uid, review.to_input(verdict="disagree", corrected_label="tb")
                    )
                    saved.append((amended.review_uid, amended.version))
                if i % SHARED_AMEND_EVERY == 0:
                    amended = store.amend_review(shared_uid, shared.to_input(reviewer=reviewer, note=f"pass {i}"))
                    saved.append((amended.review_uid, amended.version))
            except Exception as error:  # counted as a problem by the parent, the run goes on
                errors.append(f"writer {writer}, review {i}: {error}")
    finally:
        store.close()
        results.put((writer, saved, errors))


def expected_amends(writers: int, reviews_per_writer: int) -> tuple[int, int]:
    """(own amendments, shared amendments) a run of this size writes."""
    return writers * (reviews_per_writer // OWN_AMEND_EVERY), writers * (reviews_per_writer // SHARED_AMEND_EVERY)


def run_stress(url: str, writers: int = 8, reviews_per_writer: int = 250, *, timeout_s: float = 1800) -> StressReport:
    """Run the writers against ``url`` and check the result; see the module docstring."""
    run_id = uuid.uuid4().hex[:8]
    with ReviewStore(url) as store:
        _refuse_real_reviews(store)
        report = StressReport(backend=store.backend, writers=writers, reviews_per_writer=reviews_per_writer)
        shared = store.add_review(_input(f"{REVIEWER_PREFIX}{run_id} shared", f"{run_id}-shared"))

    ctx = multiprocessing.get_context("spawn")  # no inherited connections or threads
    barrier = ctx.Barrier(writers + 1)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_writer, args=(url, run_id, w, reviews_per_writer, shared.review_uid, barrier, results))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=300)
    started = time.perf_counter()
    reported = []
    deadline = started + timeout_s
    for _ in processes:  # drain before join: a child cannot exit while its queue data is unread
        reported.append(results.get(timeout=max(1.0, deadline - time.perf_counter())))
    for process in processes:
        process.join(timeout=max(1.0, deadline - time.perf_counter()))
    report.wall_s = time.perf_counter() - started

    saved = [key for _, keys, _ in reported for key in keys]
    report.problems += [error for _, _, errors in reported for error in errors]
    report.problems += [f"writer process exited with {p.exitcode}" for p in processes if p.exitcode != 0]
    report.adds = sum(1 for _, version in saved if version == 1)
    report.amends = len(saved) - report.adds
    report.problems += check_run(url, run_id, writers, reviews_per_writer, shared.review_uid, saved)
    return report


def _refuse_real_reviews(store: ReviewStore) -> None:
    with read_transaction(store.engine) as conn:
        real = conn.execute(
            text("SELECT count(*) FROM reviews WHERE reviewer NOT LIKE :prefix"), {"prefix": f"{REVIEWER_PREFIX}%"}
        ).scalar_one()
    if real:
        raise StressRefused(
            f"The database holds {real} real review(s); a stress run adds thousands of rows that can never be "
            "deleted (the log is append-only). Point --url at a throw-away database."
        )


def check_run(
    url: str, run_id: str, writers: int, reviews_per_writer: int, shared_uid: str, saved: list[tuple[str, int]]
) -> list[str]:
    """Problems found in the rows of run ``run_id`` (an empty list when all is well)."""
    problems: list[str] = []
    like = {"pattern": f"{REVIEWER_PREFIX}{run_id} %"}
    with ReviewStore(url) as store, read_transaction(store.engine) as conn:
        uids = "SELECT DISTINCT review_uid FROM reviews WHERE reviewer LIKE :pattern"
        rows = conn.execute(
            text(f"SELECT id, review_uid, version, supersedes_id, reviewer FROM reviews WHERE review_uid IN ({uids})"),
            like,
        ).all()
    present = {(row.review_uid, row.version) for row in rows}
    lost = [key for key in saved if key not in present]
    if lost:
        problems.append(f"{len(lost)} saved row(s) are missing, e.g. {lost[:3]}")
    duplicated = len(rows) - len(present)
    if duplicated:
        problems.append(f"{duplicated} duplicated (review_uid, version) row(s)")
    unreported = len(present) - len(set(saved)) - 1  # the shared review's version 1 was saved by the parent
    if unreported:
        problems.append(f"{unreported} row(s) present that no writer reported as saved")
    for w in range(writers):
        adds = sum(1 for row in rows if row.version == 1 and row.reviewer == f"{REVIEWER_PREFIX}{run_id} w{w}")
        if adds != reviews_per_writer:
            problems.append(f"writer {w}: {adds} reviews stored, expected {reviews_per_writer}")
    by_uid: dict[str, dict[int, tuple[int, int | None]]] = {}
    for row in rows:
        by_uid.setdefault(row.review_uid, {})[row.version] = (row.id, row.supersedes_id)
    for uid, versions in by_uid.items():
        if sorted(versions) != list(range(1, len(versions) + 1)):
            problems.append(f"review {uid}: versions {sorted(versions)} are not 1..{len(versions)}")
            continue
        if any(versions[v][1] != versions[v - 1][0] for v in range(2, len(versions) + 1)):
            problems.append(f"review {uid}: a version does not supersede the one before it")
    own, shared = expected_amends(writers, reviews_per_writer)
    if len(by_uid.get(shared_uid, {})) != 1 + shared:
        problems.append(f"shared review: {len(by_uid.get(shared_uid, {}))} versions, expected {1 + shared}")
    total, expected = sum(len(v) for v in by_uid.values()), 1 + writers * reviews_per_writer + own + shared
    if total != expected:
        problems.append(f"{total} rows in all, expected {expected}")
    return problems
