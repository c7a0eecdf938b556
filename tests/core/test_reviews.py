"""Review log: append-only storage, validation, filters, CSV, migrations, errors, multi-process writes.

Every test uses a real SQLite file under tmp_path; the tests taking ``review_db_url`` (or ``any_store``) run
on SQLite and on a real PostgreSQL server too (``tests/core/conftest.py``; more PostgreSQL tests in
``test_review_backends.py``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import multiprocessing
import os
import sqlite3
import sys
import types
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LIGHT_CORE_ENV = "CHEST_TEST_LIGHT_CORE"
if os.environ.get(LIGHT_CORE_ENV) == "1" and "core" not in sys.modules:
    # A spawned writer of test_concurrent_processes_lose_nothing. ``core/__init__.py`` imports torch
    # (about 2 s of CPU per process, far more on a busy machine); core.reviews needs none of it, so
    # the writers load the ``core`` package without running its __init__.
    _core = types.ModuleType("core")
    _core.__path__ = [str(REPO_ROOT / "core")]
    sys.modules["core"] = _core

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

from core.errors import ChestReviewError, ReviewLogError  # noqa: E402
from core.reviews import (  # noqa: E402
    CSV_COLUMNS,
    ReviewConflictError,
    ReviewFilters,
    ReviewInput,
    ReviewNotFoundError,
    ReviewStorageError,
    ReviewStore,
    ReviewValidationError,
    alembic_config,
)
from core.reviews.schema import Base  # noqa: E402

PROBS = {"normal": 0.1, "covid": 0.6, "tb": 0.05, "bacterial": 0.15, "viral": 0.1}
WEIGHTS = hashlib.sha256(b"weights").hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_input(**changes) -> ReviewInput:
    values = dict(
        reviewer="Dr Ann",
        case_hash=sha("case-1"),
        model_name="manet",
        model_version="1.0",
        weights_sha256=WEIGHTS,
        predicted_probabilities=dict(PROBS),
        predicted_label="covid",
        verdict="agree",
        confidence=4,
    )
    values.update(changes)
    return ReviewInput(**values)


class Clock:
    """Deterministic store clock: each call advances by ``step``."""

    def __init__(self, start: datetime, step: timedelta = timedelta(minutes=1)) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def raw_rows(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT * FROM reviews ORDER BY id").fetchall()


@pytest.fixture
def any_store(review_db_url: str):
    """A store on each backend (SQLite file, PostgreSQL database)."""
    with ReviewStore(review_db_url) as opened:
        yield opened


def rows_at(url: str) -> list[tuple]:
    """Every row of ``reviews`` by id, on any backend (through SQLAlchemy, not the store)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql("SELECT * FROM reviews ORDER BY id")]
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# add / amend / history / current


def test_add_review_stores_version_one(any_store: ReviewStore, review_db_url: str) -> None:
    store = any_store
    before = datetime.now(timezone.utc)
    review = store.add_review(make_input(reviewer="  Dr Ann  ", case_hash=sha("case-1").upper()))
    assert review.version == 1 and review.supersedes_id is None
    assert len(review.review_uid) == 32 and int(review.review_uid, 16) >= 0
    assert review.reviewer == "Dr Ann"
    assert review.case_hash == sha("case-1")
    assert review.corrected_label == "covid"  # agree: the predicted label
    assert review.predicted_probabilities == PROBS
    assert review.note == "" and review.where_wrong is None
    assert review.created_at.tzinfo is not None and review.created_at.utcoffset() == timedelta(0)
    assert before <= review.created_at <= datetime.now(timezone.utc)
    assert store.current_reviews() == [review]
    assert store.history(review.review_uid) == [review]
    assert len(rows_at(review_db_url)) == 1


def test_amend_appends_versions_and_keeps_old_rows(any_store: ReviewStore, review_db_url: str) -> None:
    store = any_store
    first = store.add_review(make_input())
    other = store.add_review(make_input(case_hash=sha("case-2")))
    second = store.amend_review(
        first.review_uid,
        first.to_input(verdict="disagree", corrected_label="bacterial", where_wrong="  missed  left lower lobe "),
    )
    third = store.amend_review(first.review_uid, second.to_input(confidence=2, note="second look"))

    assert (second.version, second.supersedes_id) == (2, first.id)
    assert (third.version, third.supersedes_id) == (3, second.id)
    assert second.where_wrong == "missed left lower lobe"
    assert third.corrected_label == "bacterial" and third.verdict == "disagree"
    assert [r.version for r in store.history(first.review_uid)] == [1, 2, 3]
    assert store.history(first.review_uid)[0] == first  # the original is untouched
    current = store.current_reviews()
    assert {r.id for r in current} == {third.id, other.id}
    assert len(rows_at(review_db_url)) == 4


def test_amend_unknown_or_malformed_uid(any_store: ReviewStore) -> None:
    store = any_store
    with pytest.raises(ReviewNotFoundError):
        store.amend_review("0" * 32, make_input())
    with pytest.raises(ReviewNotFoundError):
        store.history("f" * 32)
    with pytest.raises(ReviewValidationError) as info:
        store.amend_review("not-a-uid", make_input())
    assert info.value.field == "review_uid"


@pytest.mark.parametrize(
    "change",
    [
        {"case_hash": sha("another case")},
        {"model_name": "other-model"},
        {"model_version": "2.0"},
        {"weights_sha256": sha("other weights")},
        {"predicted_label": "normal"},
        {"predicted_probabilities": {**PROBS, "covid": 0.5, "normal": 0.2}},
    ],
)
def test_amendment_must_describe_the_same_prediction(any_store: ReviewStore, change: dict) -> None:
    store = any_store
    first = store.add_review(make_input())
    with pytest.raises(ReviewValidationError, match="same case and model prediction|predicted probabilities"):
        store.amend_review(first.review_uid, first.to_input(**change))
    assert len(store.history(first.review_uid)) == 1


def test_expected_version_detects_concurrent_amendment(any_store: ReviewStore) -> None:
    store = any_store
    first = store.add_review(make_input())
    store.amend_review(first.review_uid, first.to_input(confidence=3), expected_version=1)
    with pytest.raises(ReviewConflictError):
        store.amend_review(first.review_uid, first.to_input(confidence=5), expected_version=1)
    assert [r.version for r in store.history(first.review_uid)] == [1, 2]


# ---------------------------------------------------------------------------------------------
# append-only enforcement


def test_raw_update_and_delete_abort(store: ReviewStore, db_path: Path) -> None:
    review = store.add_review(make_input())
    store.amend_review(review.review_uid, review.to_input(note="v2"))
    before = raw_rows(db_path)

    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE reviews SET verdict = 'disagree' WHERE id = ?", (review.id,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM reviews")
        conn.rollback()
    finally:
        conn.close()

    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        with store.engine.begin() as sa_conn:
            sa_conn.exec_driver_sql("UPDATE reviews SET note = 'tampered'")
    assert raw_rows(db_path) == before


# ---------------------------------------------------------------------------------------------
# validation

BAD_INPUTS = [
    ({"reviewer": "   "}, "reviewer"),
    ({"reviewer": "x" * 101}, "reviewer"),
    ({"reviewer": "Ann\nBob"}, "reviewer"),
    ({"reviewer": None}, "reviewer"),
    ({"case_hash": "abc"}, "case_hash"),
    ({"case_hash": "g" * 64}, "case_hash"),
    ({"case_hash": "scan_0001.dcm"}, "case_hash"),
    ({"weights_sha256": ""}, "weights_sha256"),
    ({"model_name": ""}, "model_name"),
    ({"model_version": None}, "model_version"),
    ({"predicted_probabilities": {}}, "predicted_probabilities"),
    ({"predicted_probabilities": {**PROBS, "covid": 1.5}}, "predicted_probabilities"),
    ({"predicted_probabilities": {**PROBS, "covid": float("nan")}}, "predicted_probabilities"),
    ({"predicted_probabilities": {**PROBS, "covid": "0.6"}}, "predicted_probabilities"),
    ({"predicted_probabilities": {**PROBS, "other": 0.0}}, "predicted_probabilities"),
    ({"predicted_label": "pneumothorax"}, "predicted_label"),
    ({"verdict": "maybe"}, "verdict"),
    ({"verdict": "disagree"}, "corrected_label"),  # missing correction
    ({"verdict": "disagree", "corrected_label": "covid"}, "corrected_label"),  # same as predicted
    ({"verdict": "disagree", "corrected_label": "pneumothorax"}, "corrected_label"),
    ({"verdict": "agree", "corrected_label": "tb"}, "corrected_label"),
    ({"confidence": 0}, "confidence"),
    ({"confidence": 6}, "confidence"),
    ({"confidence": 3.5}, "confidence"),
    ({"confidence": True}, "confidence"),
    ({"note": "x" * 2001}, "note"),
    ({"note": 12}, "note"),
    ({"where_wrong": "y" * 201}, "where_wrong"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUTS)
def test_bad_input_is_rejected(store: ReviewStore, db_path: Path, change: dict, field: str) -> None:
    with pytest.raises(ReviewValidationError) as info:
        store.add_review(make_input(**change))
    assert info.value.field == field
    assert isinstance(info.value, ReviewLogError) and isinstance(info.value, ChestReviewError)
    assert str(info.value)  # a message for the user
    assert raw_rows(db_path) == []


@pytest.mark.parametrize("label", ["other", "uncertain", "tb", " viral "])
def test_disagree_accepts_model_classes_and_extras(store: ReviewStore, label: str) -> None:
    review = store.add_review(make_input(verdict="disagree", corrected_label=label))
    assert review.corrected_label == label.strip()


def test_edge_values_are_accepted(store: ReviewStore) -> None:
    review = store.add_review(
        make_input(
            reviewer="R" * 100,
            note="n" * 2000,
            where_wrong="w" * 200,
            confidence=1,
            verdict=" AGREE ",
            corrected_label="covid",
        )
    )
    assert (review.verdict, review.corrected_label, review.confidence) == ("agree", "covid", 1)


# ---------------------------------------------------------------------------------------------
# filters


@pytest.fixture
def filled(review_db_url: str):
    """Five reviews, one a day from 2024-03-01 10:00 UTC; review 0 later amended to disagree (both backends)."""
    clock = Clock(datetime(2024, 2, 29, 10, 0, tzinfo=timezone.utc), step=timedelta(days=1))
    store = ReviewStore(review_db_url, clock=clock)
    specs = [
        dict(reviewer="Ann", predicted_label="covid", verdict="agree"),
        dict(reviewer="Bob", predicted_label="covid", verdict="disagree", corrected_label="viral"),
        dict(reviewer="Ann", predicted_label="tb", verdict="agree"),
        dict(reviewer="Cy", predicted_label="normal", verdict="disagree", corrected_label="other", model_name="unet-cls"),
        dict(reviewer="Bob", predicted_label="bacterial", verdict="agree"),
    ]
    made = [store.add_review(make_input(case_hash=sha(f"case-{i}"), **spec)) for i, spec in enumerate(specs)]
    # 2024-03-06 10:00: review 0 amended to a disagreement
    amended = store.amend_review(made[0].review_uid, made[0].to_input(verdict="disagree", corrected_label="uncertain"))
    yield store, made, amended
    store.close()


def uids(reviews) -> set[str]:
    return {r.review_uid for r in reviews}


def test_filters(filled) -> None:
    store, made, amended = filled
    assert [r.created_at.date() for r in made] == [date(2024, 3, d) for d in range(1, 6)]
    assert len(store.current_reviews()) == 5
    assert store.current_reviews()[0] == amended  # newest first

    assert uids(store.current_reviews(ReviewFilters(reviewer="Ann"))) == uids([made[0], made[2]])
    assert uids(store.current_reviews(ReviewFilters(reviewer=" Bob "))) == uids([made[1], made[4]])
    # filters look at the latest version only: review 0 is now a disagreement
    assert uids(store.current_reviews(ReviewFilters(verdict="agree"))) == uids([made[2], made[4]])
    assert uids(store.current_reviews(ReviewFilters(verdict="disagree"))) == uids([made[0], made[1], made[3]])
    assert uids(store.current_reviews(ReviewFilters(predicted_label="covid"))) == uids(made[:2])
    assert uids(store.current_reviews(ReviewFilters(corrected_label="uncertain"))) == uids([made[0]])
    assert uids(store.current_reviews(ReviewFilters(model_name="unet-cls"))) == uids([made[3]])
    assert uids(store.current_reviews(ReviewFilters(case_hash_prefix=sha("case-3")[:6].upper()))) == uids([made[3]])
    assert store.current_reviews(ReviewFilters(reviewer="Ann", verdict="agree")) == [made[2]]
    assert store.current_reviews(ReviewFilters(reviewer="Nobody")) == []
    assert len(store.current_reviews(ReviewFilters(reviewer=" ", case_hash_prefix=""))) == 5


def test_date_range_filter(filled) -> None:
    store, made, amended = filled
    # dates are whole UTC days, both ends inclusive
    got = store.current_reviews(ReviewFilters(date_from=date(2024, 3, 2), date_to=date(2024, 3, 4)))
    assert uids(got) == uids(made[1:4])
    # review 0's current version is dated 2024-03-06
    assert uids(store.current_reviews(ReviewFilters(date_from=date(2024, 3, 6)))) == uids([made[0]])
    assert uids(store.current_reviews(ReviewFilters(date_to=date(2024, 3, 1)))) == set()
    same_day = ReviewFilters(date_from=date(2024, 3, 3), date_to=date(2024, 3, 3))
    assert uids(store.current_reviews(same_day)) == uids([made[2]])
    # datetimes are exact bounds; other time zones are converted to UTC; naive means UTC
    plus2 = timezone(timedelta(hours=2))
    got = store.current_reviews(ReviewFilters(date_from=datetime(2024, 3, 5, 12, 0, tzinfo=plus2)))
    assert uids(got) == uids([made[0], made[4]])
    got = store.current_reviews(ReviewFilters(date_to=datetime(2024, 3, 2, 10, 0)))
    assert uids(got) == uids([made[1]])


@pytest.mark.parametrize(
    "filters",
    [
        ReviewFilters(verdict="maybe"),
        ReviewFilters(case_hash_prefix="xyz"),
        ReviewFilters(case_hash_prefix="%"),
        ReviewFilters(date_from=date(2024, 3, 5), date_to=date(2024, 3, 1)),
        ReviewFilters(date_from=date(2024, 3, 5), date_to=date(2024, 3, 4)),
        ReviewFilters(date_from=datetime(2024, 3, 5, tzinfo=timezone.utc), date_to=date(2024, 3, 4)),
        ReviewFilters(reviewer=3),  # type: ignore[arg-type]
    ],
)
def test_bad_filters_are_rejected(store: ReviewStore, filters: ReviewFilters) -> None:
    with pytest.raises(ReviewValidationError):
        store.current_reviews(filters)


# ---------------------------------------------------------------------------------------------
# CSV export


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_csv_current_and_history(filled) -> None:
    store, made, amended = filled
    text = store.export_csv()
    header = text.splitlines()[0].split(",")
    prob_columns = [f"prob_{c}" for c in ("normal", "covid", "tb", "bacterial", "viral")]
    assert header == [*CSV_COLUMNS, *prob_columns]
    rows = parse_csv(text)
    assert len(rows) == 5 and all(r["is_current"] == "true" for r in rows)
    first = next(r for r in rows if r["review_uid"] == made[0].review_uid)
    assert first["version"] == "2" and first["supersedes_id"] == str(made[0].id)
    assert first["corrected_label"] == "uncertain"
    assert float(first["prob_covid"]) == PROBS["covid"]
    assert first["created_at"] == "2024-03-06T10:00:00+00:00"
    for forbidden in ("patient", "file", "path", "image", "pixel"):
        assert not any(forbidden in column for column in header)

    rows = parse_csv(store.export_csv(ReviewFilters(reviewer="Ann"), include_history=True))
    assert [(r["review_uid"], r["version"], r["is_current"]) for r in rows] == [
        (made[0].review_uid, "1", "false"),
        (made[0].review_uid, "2", "true"),
        (made[2].review_uid, "1", "true"),
    ]


def test_export_csv_empty_and_awkward_text(any_store: ReviewStore) -> None:
    store = any_store
    assert parse_csv(store.export_csv()) == []
    assert store.export_csv().splitlines()[0].split(",") == list(CSV_COLUMNS)
    store.add_review(
        make_input(
            predicted_probabilities={"normal": 0.25, "effusion": 0.75},
            predicted_label="effusion",
            note='=HYPERLINK("http://x")\nsecond line, with "quotes"',
            where_wrong="@left apex",
        )
    )
    text = store.export_csv()
    rows = parse_csv(text)
    assert text.splitlines()[0].endswith("prob_normal,prob_effusion")
    assert rows[0]["note"] == '\'=HYPERLINK("http://x")\nsecond line, with "quotes"'
    assert rows[0]["where_wrong"] == "'@left apex"
    assert rows[0]["prob_effusion"] == "0.75"


# ---------------------------------------------------------------------------------------------
# migrations


HEAD_REVISION = ScriptDirectory.from_config(alembic_config()).get_current_head()  # the chain grows with issue 11


def alembic_revision(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]


def test_migration_from_empty_file_and_idempotent_reopen(db_path: Path, url: str) -> None:
    db_path.touch()  # a zero-byte file is an empty SQLite database
    with ReviewStore(url) as store:
        review = store.add_review(make_input())
    assert alembic_revision(db_path) == [HEAD_REVISION]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"reviews_no_update", "reviews_no_delete"} <= triggers  # later tables add their own
    for _ in range(2):
        with ReviewStore(url) as store:
            assert store.current_reviews() == [review]
    assert alembic_revision(db_path) == [HEAD_REVISION]


def test_model_matches_migration(any_store: ReviewStore) -> None:
    with any_store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diffs == []


def test_older_database_is_upgraded_and_other_tables_kept(db_path: Path, url: str) -> None:
    with sqlite3.connect(db_path) as conn:  # a database from before the review log existed
        conn.execute("CREATE TABLE notes (x TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    with ReviewStore(url) as store:
        store.add_review(make_input())
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT x FROM notes").fetchall() == [("keep me",)]
    assert alembic_revision(db_path) == [HEAD_REVISION]

    command.downgrade(alembic_config(url), "base")  # the CLI path (no connection passed in)
    assert alembic_revision(db_path) == []
    with ReviewStore(url) as store:
        assert store.current_reviews() == []
    assert alembic_revision(db_path) == [HEAD_REVISION]


def test_database_from_newer_app_is_refused_untouched(db_path: Path, url: str, store: ReviewStore) -> None:
    store.add_review(make_input())
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    before = raw_rows(db_path)
    with pytest.raises(ReviewStorageError, match="newer version"):
        ReviewStore(url)
    assert raw_rows(db_path) == before


# ---------------------------------------------------------------------------------------------
# database failures


def test_corrupt_file_raises_and_is_left_untouched(db_path: Path, url: str) -> None:
    junk = b"this is not a database" * 300
    db_path.write_bytes(junk)
    with pytest.raises(ReviewStorageError, match="damaged"):
        ReviewStore(url)
    assert db_path.read_bytes() == junk


def test_locked_database_raises_after_timeout_and_loses_nothing(db_path: Path, url: str, store: ReviewStore) -> None:
    kept = store.add_review(make_input())
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        impatient = ReviewStore(url, busy_timeout_s=0.2)
        with pytest.raises(ReviewStorageError, match="busy"):
            impatient.add_review(make_input(case_hash=sha("case-2")))
        with pytest.raises(ReviewStorageError, match="busy"):
            impatient.amend_review(kept.review_uid, kept.to_input(note="v2"))
        assert impatient.current_reviews() == [kept]  # WAL: reading still works
    finally:
        blocker.rollback()
        blocker.close()
    impatient.add_review(make_input(case_hash=sha("case-3")))
    impatient.close()
    assert [r.version for r in store.history(kept.review_uid)] == [1]
    assert len(store.current_reviews()) == 2


def test_read_only_database_raises_on_write(db_path: Path, store: ReviewStore) -> None:
    kept = store.add_review(make_input())
    store.close()
    with ReviewStore(f"sqlite:///file:{db_path}?mode=ro&uri=true") as read_only:
        assert read_only.current_reviews() == [kept]
        with pytest.raises(ReviewStorageError, match="read-only"):
            read_only.add_review(make_input(case_hash=sha("case-2")))
    assert len(raw_rows(db_path)) == 1


@pytest.mark.parametrize("bad_url", ["sqlite:///{tmp}/missing-folder/reviews.sqlite", "sqlite:///{tmp}"])
def test_unopenable_location_raises(tmp_path: Path, bad_url: str) -> None:
    with pytest.raises(ReviewStorageError, match="cannot be opened"):
        ReviewStore(bad_url.format(tmp=tmp_path))


@pytest.mark.parametrize(
    "bad_url", ["mysql://u:secret-pw@localhost/db", "postgresql+psycopg2://u:secret-pw@localhost/db", "not a url"]
)
def test_unsupported_url_raises(bad_url: str) -> None:
    with pytest.raises(ReviewStorageError) as info:
        ReviewStore(bad_url)
    assert "secret-pw" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# several processes at once

N_PROCESSES = 4
N_ADDS = 25


def _worker(url: str, worker: int, shared_uid: str, barrier) -> None:
    store = ReviewStore(url)
    shared = store.history(shared_uid)[0]
    barrier.wait(timeout=120)  # start writing together
    for i in range(N_ADDS):
        review = store.add_review(make_input(reviewer=f"worker {worker}", case_hash=sha(f"{worker}-{i}")))
        if i % 5 == 0:  # amend one's own review
            store.amend_review(review.review_uid, review.to_input(verdict="disagree", corrected_label="tb"))
        if i % 5 == 2:  # everyone amends the same review: versions must not collide
            store.amend_review(shared_uid, shared.to_input(note=f"worker {worker} pass {i}"))
    store.close()


def test_concurrent_processes_lose_nothing(db_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIGHT_CORE_ENV, "1")  # inherited by the spawned writers, see the top of the file
    with ReviewStore(url) as store:
        shared = store.add_review(make_input(reviewer="shared"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCESSES)
    processes = [ctx.Process(target=_worker, args=(url, w, shared.review_uid, barrier)) for w in range(N_PROCESSES)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * N_PROCESSES

    per_worker_amends = len(range(0, N_ADDS, 5))
    shared_amends = len(range(2, N_ADDS, 5))
    with ReviewStore(url) as store:
        rows = raw_rows(db_path)
        assert len(rows) == 1 + N_PROCESSES * (N_ADDS + per_worker_amends + shared_amends)
        with sqlite3.connect(db_path) as conn:
            dupes = conn.execute(
                "SELECT review_uid, version FROM reviews GROUP BY review_uid, version HAVING count(*) > 1"
            ).fetchall()
        assert dupes == []
        current = store.current_reviews()
        assert len(current) == 1 + N_PROCESSES * N_ADDS
        for w in range(N_PROCESSES):
            mine = store.current_reviews(ReviewFilters(reviewer=f"worker {w}"))
            assert len(mine) == N_ADDS
            assert sum(r.version == 2 for r in mine) == per_worker_amends
        history = store.history(shared.review_uid)
        assert [r.version for r in history] == list(range(1, 2 + N_PROCESSES * shared_amends))
        assert all(later.supersedes_id == earlier.id for earlier, later in zip(history, history[1:]))


# ---------------------------------------------------------------------------------------------
# task: the page a review came from (migration 0002)

TASK_TRIGGERS = {"reviews_no_update", "reviews_no_delete"}
NO_SLICE = (None, None)  # slice_index, slice_view: appended by migration 0003 after task


def schema_objects(db_path: Path, kind: str) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))}


def column_names(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [r[1] for r in conn.execute("PRAGMA table_info(reviews)")]


def assert_append_only(db_path: Path) -> None:
    """Raw UPDATE and DELETE are refused by the triggers and change nothing."""
    before = raw_rows(db_path)
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE reviews SET note = 'tampered'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM reviews")
        conn.rollback()
    finally:
        conn.close()
    assert raw_rows(db_path) == before


V1_ROW = dict(
    review_uid="a" * 32,
    version=1,
    supersedes_id=None,
    reviewer="Dr Old",
    case_hash=sha("old case"),
    model_name="manet",
    model_version="0.9",
    weights_sha256=WEIGHTS,
    predicted_probabilities='{"normal": 0.1, "covid": 0.6, "tb": 0.05, "bacterial": 0.15, "viral": 0.1}',
    predicted_label="covid",
    verdict="agree",
    corrected_label="covid",
    confidence=3,
    note="written by the 0001 app",
    where_wrong=None,
    created_at="2023-06-01 08:00:00.000000",
)


def make_0001_database_with_rows(db_path: Path, url: str) -> None:
    """A review log as the app before migration 0002 left it: schema 0001, one review in two versions."""
    command.upgrade(alembic_config(url), "0001")
    second = dict(V1_ROW, version=2, supersedes_id=1, verdict="disagree", corrected_label="tb",
                  created_at="2023-06-02 08:00:00.000000")
    with sqlite3.connect(db_path) as conn:
        for row in (V1_ROW, second):
            conn.execute(
                f"INSERT INTO reviews ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
    assert alembic_revision(db_path) == ["0001"] and "task" not in column_names(db_path)


def test_upgrade_of_a_0001_database_gives_old_rows_task_cxr_and_keeps_triggers(db_path: Path, url: str) -> None:
    make_0001_database_with_rows(db_path, url)
    before = raw_rows(db_path)
    assert_append_only(db_path)

    with ReviewStore(url) as store:  # opening migrates to head
        assert alembic_revision(db_path) == [HEAD_REVISION]
        assert raw_rows(db_path) == [row + ("cxr", *NO_SLICE) for row in before]  # same rows, task appended
        assert [(r.version, r.task) for r in store.history(V1_ROW["review_uid"])] == [(1, "cxr"), (2, "cxr")]
        assert TASK_TRIGGERS <= schema_objects(db_path, "trigger")  # later tables add their own
        assert "ix_reviews_task" in schema_objects(db_path, "index")
        assert_append_only(db_path)
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.exec_driver_sql("UPDATE reviews SET task = 'ct-slice'")

        old = store.current_reviews()[0]
        amended = store.amend_review(old.review_uid, old.to_input(note="third look"))
        assert (amended.version, amended.task) == (3, "cxr")
        ct = store.add_review(make_input(task="ct-slice"))
        assert ct.task == "ct-slice"
    assert_append_only(db_path)
    with sqlite3.connect(db_path) as conn:  # the CHECK constraint guards raw inserts too
        with pytest.raises(sqlite3.IntegrityError, match="ck_reviews_task"):
            conn.execute(
                f"INSERT INTO reviews ({', '.join(V1_ROW)}, task) VALUES ({', '.join('?' * len(V1_ROW))}, 'mri')",
                list(dict(V1_ROW, review_uid="b" * 32).values()),
            )


def test_fresh_database_has_task_column_index_and_check(db_path: Path, store: ReviewStore) -> None:
    assert column_names(db_path)[-3:] == ["task", "slice_index", "slice_view"]
    assert "ix_reviews_task" in schema_objects(db_path, "index")
    assert TASK_TRIGGERS <= schema_objects(db_path, "trigger")
    with sqlite3.connect(db_path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="ck_reviews_task"):
            conn.execute(
                f"INSERT INTO reviews ({', '.join(V1_ROW)}, task) VALUES ({', '.join('?' * len(V1_ROW))}, 'xray')",
                list(V1_ROW.values()),
            )


def test_downgrade_to_0001_keeps_rows_and_triggers_and_upgrades_again(db_path: Path, url: str) -> None:
    with ReviewStore(url) as store:
        kept = store.add_review(make_input())
        store.amend_review(kept.review_uid, kept.to_input(note="v2"))
    before = raw_rows(db_path)

    command.downgrade(alembic_config(url), "0001")
    assert alembic_revision(db_path) == ["0001"]
    assert "task" not in column_names(db_path)
    assert "ix_reviews_task" not in schema_objects(db_path, "index")
    assert raw_rows(db_path) == [row[:-3] for row in before]
    assert schema_objects(db_path, "trigger") == TASK_TRIGGERS
    assert_append_only(db_path)

    with ReviewStore(url) as store:
        assert raw_rows(db_path) == before
        assert [r.task for r in store.history(kept.review_uid)] == ["cxr", "cxr"]
    assert alembic_revision(db_path) == [HEAD_REVISION]
    assert_append_only(db_path)


def test_downgrade_is_refused_while_ct_reviews_exist_unless_forced(db_path: Path, url: str) -> None:
    from core.reviews.__main__ import main as reviews_cli

    with ReviewStore(url) as store:
        store.add_review(make_input())
        store.add_review(make_input(case_hash=sha("ct case"), task="ct-slice"))
    before = raw_rows(db_path)
    with pytest.raises(RuntimeError, match="1 review.*CT pages"):
        command.downgrade(alembic_config(url), "0001")
    assert alembic_revision(db_path) == [HEAD_REVISION] and raw_rows(db_path) == before

    reviews_cli(["--url", url, "-x", "drop_tasks=yes", "downgrade", "0001"])  # the documented escape
    assert alembic_revision(db_path) == ["0001"]
    assert raw_rows(db_path) == [row[:-3] for row in before]
    assert_append_only(db_path)


def test_reviews_record_their_task(any_store: ReviewStore, review_db_url: str) -> None:
    store = any_store
    xray = store.add_review(make_input())  # callers that predate the task get "cxr"
    ct = store.add_review(make_input(case_hash=sha("ct"), task=" CT-Slice "))
    volume = store.add_review(make_input(case_hash=sha("volume"), task="ct-volume"))
    assert (xray.task, ct.task, volume.task) == ("cxr", "ct-slice", "ct-volume")
    assert {r.review_uid: r.task for r in store.current_reviews()} == {
        xray.review_uid: "cxr", ct.review_uid: "ct-slice", volume.review_uid: "ct-volume"
    }
    assert store.history(ct.review_uid)[0].task == "ct-slice"
    assert [row[-3] for row in rows_at(review_db_url)] == ["cxr", "ct-slice", "ct-volume"]


@pytest.mark.parametrize("task", ["xray", "", "  ", None, 3, "CT slice", "ct_slice"])
def test_unknown_task_is_refused(store: ReviewStore, db_path: Path, task) -> None:
    with pytest.raises(ReviewValidationError) as info:
        store.add_review(make_input(task=task))
    assert info.value.field == "task" and "cxr, ct-slice, ct-volume" in str(info.value)
    assert raw_rows(db_path) == []
    if task is None:  # a filter of None means any task
        return
    with pytest.raises(ReviewValidationError) as info:
        store.current_reviews(ReviewFilters(task=task))
    assert info.value.field == "task"


def test_amendment_keeps_the_task_of_the_review(any_store: ReviewStore) -> None:
    store = any_store
    ct = store.add_review(make_input(task="ct-slice"))
    amended = store.amend_review(ct.review_uid, ct.to_input(verdict="disagree", corrected_label="tb"))
    assert (amended.version, amended.task) == (2, "ct-slice")
    with pytest.raises(ReviewValidationError, match="page") as info:
        store.amend_review(ct.review_uid, amended.to_input(task="cxr"))
    assert info.value.field == "task"
    with pytest.raises(ReviewValidationError) as info:  # a fresh input defaults to "cxr": refused too
        store.amend_review(ct.review_uid, make_input(note="from the X-ray page"))
    assert info.value.field == "task"
    assert [r.task for r in store.history(ct.review_uid)] == ["ct-slice", "ct-slice"]


def test_filter_and_csv_by_task(review_db_url: str) -> None:
    clock = Clock(datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc))
    with ReviewStore(review_db_url, clock=clock) as store:
        xray = store.add_review(make_input(reviewer="Ann"))
        ct = store.add_review(make_input(reviewer="Ann", case_hash=sha("ct-1"), task="ct-slice"))
        ct_bob = store.add_review(make_input(reviewer="Bob", case_hash=sha("ct-2"), task="ct-slice"))
        ct_amended = store.amend_review(ct.review_uid, ct.to_input(note="v2"))

        assert uids(store.current_reviews(ReviewFilters(task="ct-slice"))) == uids([ct, ct_bob])
        assert store.current_reviews(ReviewFilters(task=" CXR ")) == [xray]
        assert store.current_reviews(ReviewFilters(task="ct-volume")) == []
        assert store.current_reviews(ReviewFilters(task="ct-slice", reviewer="Ann")) == [ct_amended]

        text = store.export_csv(ReviewFilters(task="ct-slice"), include_history=True)
        header = text.splitlines()[0].split(",")
        assert header.index("task") == header.index("created_at") + 1
        rows = parse_csv(text)
        assert [(r["review_uid"], r["version"], r["task"]) for r in rows] == [
            (ct.review_uid, "1", "ct-slice"),  # newest current version first, then its history
            (ct.review_uid, "2", "ct-slice"),
            (ct_bob.review_uid, "1", "ct-slice"),
        ]
        assert {r["task"] for r in parse_csv(store.export_csv())} == {"cxr", "ct-slice"}


# ---------------------------------------------------------------------------------------------
# slice_view / slice_index: the CT-volume slice where the model went wrong (migration 0003)

CT_VOLUME_PROBS = {"cap": 0.3, "covid": 0.7}


def volume_input(**changes) -> ReviewInput:
    values = dict(task="ct-volume", model_name="dual-sampling", predicted_probabilities=dict(CT_VOLUME_PROBS),
                  predicted_label="covid", case_hash=sha("volume-1"))
    values.update(changes)
    return make_input(**values)


def make_0002_database_with_rows(db_path: Path, url: str) -> list[tuple]:
    """A review log as the app before migration 0003 left it: an X-ray review in two versions and a CT-slice one."""
    make_0001_database_with_rows(db_path, url)
    command.upgrade(alembic_config(url), "0002")
    with sqlite3.connect(db_path) as conn:
        row = dict(V1_ROW, review_uid="c" * 32, case_hash=sha("ct slice case"), task="ct-slice",
                   predicted_probabilities='{"non-covid": 0.2, "covid": 0.8}', created_at="2023-07-01 08:00:00.000000")
        conn.execute(f"INSERT INTO reviews ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    assert alembic_revision(db_path) == ["0002"] and "slice_index" not in column_names(db_path)
    return raw_rows(db_path)


def insert_raw(db_path: Path, **columns) -> None:
    row = dict(V1_ROW, review_uid="d" * 32, task="ct-volume", **columns)
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"INSERT INTO reviews ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def test_upgrade_of_a_0002_database_keeps_its_rows_with_no_slice(db_path: Path, url: str) -> None:
    before = make_0002_database_with_rows(db_path, url)
    with ReviewStore(url) as store:  # opening migrates to head
        assert alembic_revision(db_path) == [HEAD_REVISION]
        assert raw_rows(db_path) == [row + NO_SLICE for row in before]  # the same rows, no slice recorded
        assert {(r.task, r.slice_view, r.slice_index) for r in store.current_reviews()} == {
            ("cxr", None, None), ("ct-slice", None, None)}
        assert TASK_TRIGGERS <= schema_objects(db_path, "trigger")
        assert_append_only(db_path)
        old = store.history("c" * 32)[0]
        amended = store.amend_review(old.review_uid, old.to_input(note="second look"))
        assert (amended.version, amended.task, amended.slice_view) == (2, "ct-slice", None)
        recorded = store.add_review(volume_input(slice_view="coronal", slice_index=88))
        assert (recorded.slice_view, recorded.slice_index) == ("coronal", 88)
    assert_append_only(db_path)


@pytest.mark.parametrize("columns, constraint", [
    (dict(slice_view="oblique", slice_index=3), "ck_reviews_slice_view"),
    (dict(slice_view="axial", slice_index=-1), "ck_reviews_slice_index"),
    (dict(slice_view="axial"), "ck_reviews_slice_pair"),
    (dict(slice_index=5), "ck_reviews_slice_pair"),
])
def test_check_constraints_guard_raw_inserts_of_slices(db_path: Path, store: ReviewStore, columns, constraint) -> None:
    with pytest.raises(sqlite3.IntegrityError, match=constraint):
        insert_raw(db_path, **columns)
    insert_raw(db_path, slice_view="sagittal", slice_index=0)  # a well-formed one goes in
    assert raw_rows(db_path)[-1][-2:] == (0, "sagittal")


def test_a_ct_volume_review_records_its_slice_in_history_and_csv(review_db_url: str) -> None:
    clock = Clock(datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc))
    with ReviewStore(review_db_url, clock=clock) as store:
        first = store.add_review(volume_input(slice_view=" Axial ", slice_index=41, verdict="disagree",
                                              corrected_label="cap"))
        assert (first.slice_view, first.slice_index) == ("axial", 41)
        moved = store.amend_review(first.review_uid, first.to_input(slice_view="sagittal", slice_index=np.int64(12)))
        cleared = store.amend_review(first.review_uid, moved.to_input(slice_view=None, slice_index=None))
        assert [(r.slice_view, r.slice_index) for r in store.history(first.review_uid)] == [
            ("axial", 41), ("sagittal", 12), (None, None)]
        no_slice = store.add_review(volume_input(case_hash=sha("volume-2")))
        assert (no_slice.slice_view, no_slice.slice_index) == (None, None)

        text = store.export_csv(ReviewFilters(task="ct-volume"), include_history=True)
        header = text.splitlines()[0].split(",")
        assert header.index("slice_view") == header.index("where_wrong") + 1
        assert header.index("slice_index") == header.index("slice_view") + 1
        rows = parse_csv(text)
        assert [(r["version"], r["slice_view"], r["slice_index"]) for r in rows] == [
            ("1", "", ""),  # no_slice, the newest current review
            ("1", "axial", "41"), ("2", "sagittal", "12"), ("3", "", "")]
        assert rows[-1]["is_current"] == "true" and cleared.version == 3


@pytest.mark.parametrize("change, field", [
    (dict(slice_view="axial"), "slice_index"),
    (dict(slice_index=3), "slice_view"),
    (dict(slice_view="  ", slice_index=3), "slice_view"),
    (dict(slice_view="oblique", slice_index=3), "slice_view"),
    (dict(slice_view="axial", slice_index=-1), "slice_index"),
    (dict(slice_view="axial", slice_index=100_000), "slice_index"),
    (dict(slice_view="axial", slice_index=2.0), "slice_index"),
    (dict(slice_view="axial", slice_index=True), "slice_index"),
    (dict(slice_view="axial", slice_index="12"), "slice_index"),
    (dict(slice_view=3, slice_index=3), "slice_view"),
])
def test_a_bad_slice_is_refused_with_a_message(store: ReviewStore, db_path: Path, change: dict, field: str) -> None:
    with pytest.raises(ReviewValidationError) as info:
        store.add_review(volume_input(**change))
    assert info.value.field == field and str(info.value)
    assert raw_rows(db_path) == []


@pytest.mark.parametrize("task", ["cxr", "ct-slice"])
def test_only_ct_volume_reviews_record_a_slice(store: ReviewStore, db_path: Path, task: str) -> None:
    with pytest.raises(ReviewValidationError, match="Only reviews of a CT volume") as info:
        store.add_review(make_input(task=task, slice_view="axial", slice_index=4))
    assert info.value.field == "slice_view"
    assert raw_rows(db_path) == []


def test_downgrade_below_0003_is_refused_while_slices_exist_unless_forced(db_path: Path, url: str) -> None:
    from core.reviews.__main__ import main as reviews_cli

    with ReviewStore(url) as store:
        store.add_review(make_input())
        store.add_review(volume_input(slice_view="axial", slice_index=7))
    before = raw_rows(db_path)
    with pytest.raises(RuntimeError, match="1 review.*CT slice"):
        command.downgrade(alembic_config(url), "0002")
    assert alembic_revision(db_path) == [HEAD_REVISION] and raw_rows(db_path) == before

    reviews_cli(["--url", url, "-x", "drop_slices=yes", "downgrade", "0002"])  # the documented escape
    assert alembic_revision(db_path) == ["0002"]
    assert raw_rows(db_path) == [row[:-2] for row in before]
    assert schema_objects(db_path, "trigger") == TASK_TRIGGERS
    assert_append_only(db_path)
    with ReviewStore(url) as store:  # and up again: the slice is gone, the rows are not
        assert raw_rows(db_path) == [row[:-2] + NO_SLICE for row in before]
        assert len(store.current_reviews()) == 2


def test_downgrade_below_0003_without_slices_keeps_every_row(db_path: Path, url: str) -> None:
    with ReviewStore(url) as store:
        store.add_review(volume_input())
    before = raw_rows(db_path)
    command.downgrade(alembic_config(url), "0002")
    assert raw_rows(db_path) == [row[:-2] for row in before]
    assert "slice_view" not in column_names(db_path) and "slice_index" not in column_names(db_path)


def test_a_fused_prediction_is_reviewed_under_both_of_its_models(store: ReviewStore) -> None:
    from core.reviews.reviewed_model import FUSION_NAME, reviewed_model

    uniform = types.SimpleNamespace(name="dual-us", version="1.0", weights_sha256=sha("us"), classes=["cap", "covid"])
    balanced = types.SimpleNamespace(name="dual-ss", version="1.1", weights_sha256=sha("ss"), classes=["cap", "covid"])
    fused = reviewed_model([uniform, balanced])
    assert (fused.name, fused.version, fused.classes) == ("dual-us+dual-ss", "1.0+1.1", ("cap", "covid"))
    assert fused.weights_sha256 == hashlib.sha256(f"{sha('us')}+{sha('ss')}".encode()).hexdigest()
    assert reviewed_model([uniform, balanced]) == fused  # the same pair, the same identity
    assert reviewed_model([balanced, uniform]).weights_sha256 != fused.weights_sha256
    assert reviewed_model([uniform]).weights_sha256 == sha("us")  # one model: its own card
    long = types.SimpleNamespace(**{**vars(uniform), "name": "x" * 95})
    assert reviewed_model([long, balanced]).name == FUSION_NAME  # fits the review log's column
    with pytest.raises(ValueError):
        reviewed_model([uniform, types.SimpleNamespace(**{**vars(balanced), "classes": ["normal", "covid"]})])
    saved = store.add_review(volume_input(model_name=fused.name, model_version=fused.version,
                                          weights_sha256=fused.weights_sha256, slice_view="axial", slice_index=3))
    assert (saved.model_name, saved.weights_sha256) == (fused.name, fused.weights_sha256)
