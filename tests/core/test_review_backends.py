"""The review log on both backends: append-only enforcement, migrations up and down, concurrent writer
processes, a writer killed mid-transaction; and PostgreSQL's own failures (server down, login refused,
no database, no privilege, busy) as messages that never show the password.

``review_db_url`` (tests/core/conftest.py) gives a fresh SQLite file and a fresh database on a real,
throw-away PostgreSQL server; the PostgreSQL cases are skipped only when the server cannot run here.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import sqlalchemy as sa
from alembic import command

from core.reviews import (
    ReviewFilters,
    ReviewStorageError,
    ReviewStore,
    alembic_config,
)
from core.reviews.store import make_engine, write_transaction
from core.reviews.stress import expected_amends, run_stress
from tests.core.test_reviews import WEIGHTS, make_input, sha  # the review log tests' own inputs


def backend(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def query(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def rows(url: str) -> list[tuple]:
    return query(url, "SELECT * FROM reviews ORDER BY id")


def columns(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return [column["name"] for column in sa.inspect(engine).get_columns("reviews")]
    finally:
        engine.dispose()


def revision(url: str) -> list[str]:
    return [row[0] for row in query(url, "SELECT version_num FROM alembic_version")]


def triggers(url: str) -> set[str]:
    if backend(url) == "sqlite":
        return {row[0] for row in query(url, "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return {row[0] for row in query(url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}


APPEND_ONLY_TRIGGERS = {
    "sqlite": {"reviews_no_update", "reviews_no_delete"},
    "postgresql": {"reviews_no_update", "reviews_no_delete", "reviews_no_truncate"},
}


def assert_append_only(url: str) -> None:
    """UPDATE, DELETE (and TRUNCATE on PostgreSQL) are refused by the triggers and change nothing."""
    before = rows(url)
    statements = ["UPDATE reviews SET note = 'tampered'", "DELETE FROM reviews"]
    if backend(url) == "postgresql":
        statements.append("TRUNCATE reviews")
    engine = sa.create_engine(url)
    try:
        for statement in statements:
            # TRUNCATE meets the foreign key of review_regions (migration 0004) before the trigger, when it exists
            with pytest.raises(sa.exc.DatabaseError, match="append-only|cannot truncate a table referenced"):
                with engine.begin() as conn:
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    assert rows(url) == before
    assert APPEND_ONLY_TRIGGERS[backend(url)] <= triggers(url)  # later tables (regions) add their own


# ---------------------------------------------------------------------------------------------
# append-only


def test_update_delete_truncate_are_refused_and_the_store_says_so(review_db_url: str) -> None:
    with ReviewStore(review_db_url) as store:
        review = store.add_review(make_input())
        store.amend_review(review.review_uid, review.to_input(note="v2"))
        assert_append_only(review_db_url)
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with write_transaction(store.engine) as conn:  # the store's own write path refuses too
                conn.exec_driver_sql("DELETE FROM reviews WHERE version = 2")
        with pytest.raises(ReviewStorageError, match="cannot be changed or deleted"):
            with store._guard("saved"), write_transaction(store.engine) as conn:
                conn.exec_driver_sql("UPDATE reviews SET verdict = 'disagree'")
        assert [r.version for r in store.history(review.review_uid)] == [1, 2]


# ---------------------------------------------------------------------------------------------
# migrations up and down


def test_migrations_down_and_up_keep_rows_and_append_only(review_db_url: str) -> None:
    url = review_db_url
    with ReviewStore(url) as store:
        kept = store.add_review(make_input())
        store.amend_review(kept.review_uid, kept.to_input(note="v2"))
    head = revision(url)
    before = rows(url)

    command.downgrade(alembic_config(url), "0002")
    assert revision(url) == ["0002"] and columns(url)[-1] == "task"
    assert rows(url) == [row[:-2] for row in before]  # slice columns gone, rows kept
    command.downgrade(alembic_config(url), "0001")
    assert revision(url) == ["0001"] and "task" not in columns(url)
    assert rows(url) == [row[:-3] for row in before]
    assert_append_only(url)

    with ReviewStore(url) as store:  # opening migrates to head again
        assert revision(url) == head
        assert rows(url) == before
        assert [r.task for r in store.history(kept.review_uid)] == ["cxr", "cxr"]
    assert_append_only(url)

    command.downgrade(alembic_config(url), "base")
    assert revision(url) == []
    with ReviewStore(url) as store:
        assert store.current_reviews() == []
    assert revision(url) == head and APPEND_ONLY_TRIGGERS[backend(url)] <= triggers(url)


def test_a_0001_database_with_rows_is_upgraded_on_open(review_db_url: str) -> None:
    url = review_db_url
    command.upgrade(alembic_config(url), "0001")
    engine = sa.create_engine(url)
    old = dict(
        review_uid="a" * 32, version=1, supersedes_id=None, reviewer="Dr Old", case_hash=sha("old"),
        model_name="manet", model_version="0.9", weights_sha256=WEIGHTS,
        predicted_probabilities='{"covid": 0.6, "normal": 0.4}', predicted_label="covid", verdict="agree",
        corrected_label="covid", confidence=3, note="from 0001",
        where_wrong=None, created_at="2023-06-01 08:00:00",
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO reviews ({', '.join(old)}) VALUES ({', '.join(':' + k for k in old)})"), old)
    engine.dispose()
    with ReviewStore(url) as store:
        (review,) = store.current_reviews()
        assert (review.task, review.slice_view, review.reviewer) == ("cxr", None, "Dr Old")
        amended = store.amend_review(review.review_uid, review.to_input(note="second look"))
        assert (amended.version, amended.supersedes_id) == (2, review.id)
    assert_append_only(url)


def test_downgrades_that_would_lose_data_are_refused(review_db_url: str) -> None:
    url = review_db_url
    with ReviewStore(url) as store:
        store.add_review(make_input(task="ct-volume", predicted_probabilities={"cap": 0.3, "covid": 0.7},
                                    slice_view="axial", slice_index=7))
    before, head = rows(url), revision(url)
    with pytest.raises(RuntimeError, match="CT slice"):
        command.downgrade(alembic_config(url), "0002")
    assert rows(url) == before and revision(url) == head  # the whole downgrade rolled back


# ---------------------------------------------------------------------------------------------
# several writer processes at once; a writer killed in the middle of its transaction

STRESS_WRITERS = 4
STRESS_REVIEWS = 30


def test_concurrent_writer_processes_lose_and_duplicate_nothing(review_db_url: str) -> None:
    report = run_stress(review_db_url, writers=STRESS_WRITERS, reviews_per_writer=STRESS_REVIEWS)
    assert report.ok, report.summary()
    own, shared = expected_amends(STRESS_WRITERS, STRESS_REVIEWS)
    assert (report.adds, report.amends) == (STRESS_WRITERS * STRESS_REVIEWS, own + shared)
    dupes = query(
        review_db_url, "SELECT review_uid, version FROM reviews GROUP BY review_uid, version HAVING count(*) > 1"
    )
    assert dupes == []
    assert len(rows(review_db_url)) == 1 + STRESS_WRITERS * STRESS_REVIEWS + own + shared


def test_the_stress_command_prints_its_figures(review_db_url: str, capsys: pytest.CaptureFixture) -> None:
    from core.reviews.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--url", review_db_url, "stress", "--writers", "2", "--reviews", "10"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "reviews/s" in out and "wall time" in out and "check: OK" in out

    with ReviewStore(review_db_url) as store:  # a database with real reviews is refused
        store.add_review(make_input())
    with pytest.raises(SystemExit) as info:
        main(["stress", "--url", review_db_url, "--writers", "1", "--reviews", "1"])
    assert info.value.code == 2 and "throw-away" in capsys.readouterr().err


def _write_and_hang(url: str, amend_uid: str, inserted) -> None:
    """Child: inside one write transaction, add a review and amend another, signal, then wait to be killed."""
    store = ReviewStore(url)
    latest = store.history(amend_uid)[-1]
    with write_transaction(store.engine) as conn:
        new = store._insert(conn, make_input(case_hash=sha("never committed")).validated(),
                            review_uid="e" * 32, version=1, supersedes_id=None)
        store._insert(conn, latest.to_input(note="never committed").validated(),
                      review_uid=amend_uid, version=latest.version + 1, supersedes_id=latest.id)
        inserted.set()  # the rows are written but not committed; the parent now kills this process
        assert new.id
        time.sleep(600)


def test_a_writer_killed_mid_transaction_leaves_the_store_consistent_and_writable(review_db_url: str) -> None:
    url = review_db_url
    with ReviewStore(url) as store:
        first = store.add_review(make_input())
        store.amend_review(first.review_uid, first.to_input(note="v2"))
    before = rows(url)

    ctx = multiprocessing.get_context("spawn")
    inserted = ctx.Event()
    child = ctx.Process(target=_write_and_hang, args=(url, first.review_uid, inserted))
    child.start()
    try:
        assert inserted.wait(timeout=120), "the writer never reached its insert"
        with ReviewStore(url, busy_timeout_s=0.5) as store:  # a reader is not blocked by the open write
            assert len(store.current_reviews()) == 1
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL

    # SQLite: the lock died with the process, the next connection recovers the WAL.
    # PostgreSQL: the server sees the connection close, rolls the transaction back and frees the lock.
    with ReviewStore(url, busy_timeout_s=20) as store:
        assert rows(url) == before  # no partial rows
        assert [r.version for r in store.history(first.review_uid)] == [1, 2]
        third = store.amend_review(first.review_uid, store.history(first.review_uid)[-1].to_input(note="v3"))
        assert (third.version, third.supersedes_id) == (3, before[-1][0])
        store.add_review(make_input(case_hash=sha("after the kill")))
        assert len(store.current_reviews()) == 2
        assert store.current_reviews(ReviewFilters(case_hash_prefix=sha("never committed")[:8])) == []
    assert_append_only(url)


# ---------------------------------------------------------------------------------------------
# PostgreSQL failures as messages for the user


def test_postgresql_short_url_means_psycopg(postgresql_url: str) -> None:
    short = postgresql_url.replace("postgresql+psycopg://", "postgresql://")
    with ReviewStore(short) as store:
        assert store.backend == "postgresql" and store.engine.dialect.driver == "psycopg"
        store.add_review(make_input())
    with ReviewStore(postgresql_url) as store:
        assert len(store.current_reviews()) == 1


def test_server_down_is_a_message(postgresql_server) -> None:
    from tests.postgres_cluster import free_port

    url = f"postgresql+psycopg://reviewer:top-secret-pw@127.0.0.1:{free_port()}/reviews"
    with pytest.raises(ReviewStorageError, match="cannot be reached: is it running") as info:
        ReviewStore(url)
    assert "top-secret-pw" not in str(info.value)


def test_login_refused_is_a_message_without_the_password(postgresql_server) -> None:
    from tests.postgres_cluster import PASSWORD_ROLE

    url = postgresql_server.url("postgres", PASSWORD_ROLE, "wrong-secret-pw")
    with pytest.raises(ReviewStorageError, match=f"refused the login of user '{PASSWORD_ROLE}'") as info:
        ReviewStore(url)
    message = str(info.value)
    assert "wrong-secret-pw" not in message and "password in CHEST_REVIEW_DB_URL" in message


def test_missing_database_and_missing_privilege_are_messages(postgresql_server) -> None:
    from tests.postgres_cluster import PASSWORD_ROLE, PASSWORD_ROLE_SECRET

    with pytest.raises(ReviewStorageError, match="no such database") as info:
        ReviewStore(postgresql_server.url("no_such_db"))
    assert "create it" in str(info.value)

    name = postgresql_server.create_database().rsplit("/", 1)[1]
    ReviewStore(postgresql_server.url(name)).close()  # migrated by the owner
    url = postgresql_server.url(name, PASSWORD_ROLE, PASSWORD_ROLE_SECRET)
    with pytest.raises(ReviewStorageError, match=f"user '{PASSWORD_ROLE}' may not use the review tables") as info:
        ReviewStore(url)
    assert PASSWORD_ROLE_SECRET not in str(info.value) and PASSWORD_ROLE_SECRET not in repr(info.value)
    postgresql_server.drop_database(name)


def test_a_held_write_lock_makes_writers_busy_but_not_readers(postgresql_url: str) -> None:
    with ReviewStore(postgresql_url) as store:
        kept = store.add_review(make_input())
    blocker = make_engine(postgresql_url)
    try:
        with write_transaction(blocker):  # another writer holds the lock
            with ReviewStore(postgresql_url, busy_timeout_s=0.3) as impatient:
                with pytest.raises(ReviewStorageError, match="busy"):
                    impatient.add_review(make_input(case_hash=sha("case-2")))
                with pytest.raises(ReviewStorageError, match="busy"):
                    impatient.amend_review(kept.review_uid, kept.to_input(note="v2"))
                assert impatient.current_reviews() == [kept]
        with ReviewStore(postgresql_url) as store:
            store.add_review(make_input(case_hash=sha("case-3")))
            assert len(store.current_reviews()) == 2
    finally:
        blocker.dispose()


def test_repr_and_messages_hide_the_password(postgresql_server) -> None:
    from tests.postgres_cluster import PASSWORD_ROLE, PASSWORD_ROLE_SECRET

    name = postgresql_server.create_database(owner=PASSWORD_ROLE).rsplit("/", 1)[1]
    url = postgresql_server.url(name, PASSWORD_ROLE, PASSWORD_ROLE_SECRET)
    with ReviewStore(url) as store:  # the password login works when it is right
        store.add_review(make_input())
        assert PASSWORD_ROLE_SECRET not in repr(store) and "***" in repr(store)
    postgresql_server.drop_database(name)


def _open_store(url: str, barrier) -> None:
    barrier.wait(timeout=120)
    ReviewStore(url).close()


def test_processes_opening_a_new_database_at_once_migrate_it_once(review_db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    openers = [ctx.Process(target=_open_store, args=(review_db_url, barrier)) for _ in range(4)]
    for process in openers:
        process.start()
    for process in openers:
        process.join(timeout=120)
    assert [p.exitcode for p in openers] == [0] * 4
    with ReviewStore(review_db_url) as store:
        store.add_review(make_input())
    assert len(revision(review_db_url)) == 1
    assert_append_only(review_db_url)


def test_postgresql_writes_hold_the_lock_and_reads_see_one_snapshot(postgresql_url: str) -> None:
    from core.reviews.store import _PG_WRITE_LOCK_KEY, read_transaction

    lock_held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
        f"AND ((classid::bigint << 32) | objid::bigint) = {_PG_WRITE_LOCK_KEY}"
    )
    with ReviewStore(postgresql_url) as store:
        with write_transaction(store.engine) as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar_one() == "read committed"
            assert conn.exec_driver_sql(lock_held).scalar_one() == 1
        with read_transaction(store.engine) as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar_one() == "repeatable read"
            assert conn.exec_driver_sql(lock_held).scalar_one() == 0
            seen = conn.exec_driver_sql("SELECT count(*) FROM reviews").scalar_one()
            store.add_review(make_input())  # committed by another connection meanwhile
            assert conn.exec_driver_sql("SELECT count(*) FROM reviews").scalar_one() == seen  # same snapshot
        assert conn.closed and len(store.current_reviews()) == 1
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "30s"
