"""Alembic environment of the review log.

Normally nothing runs this by hand: ``ReviewStore(url)`` calls ``upgrade head`` on open, passing its
own connection (already inside the store's write transaction: ``BEGIN IMMEDIATE`` on SQLite, the
advisory write lock on PostgreSQL, so two processes opening a new database migrate it once) in
``config.attributes["connection"]``; see ``core.reviews.store.alembic_config``.

Migrations run on SQLite and PostgreSQL; anything dialect-specific branches on
``op.get_bind().dialect.name`` (see ``0001``: triggers). DDL is transactional on both, so a failed
upgrade leaves the database at its previous revision.

Command line (there is no alembic.ini; the configuration is built in code):

    python -m core.reviews current                 # revision of the database in CHEST_REVIEW_DB(_URL)
    python -m core.reviews upgrade head
    python -m core.reviews --url sqlite:////data/reviews.sqlite history
    python -m core.reviews --url postgresql+psycopg://user:pw@host:5432/reviews current
    python -m core.reviews revision --rev-id 0002 -m "add something"   # then edit the new file by hand

``python -m core.reviews`` is Alembic's own command line (``python -m alembic``) with ``--url``
added and ``script_location`` / ``sqlalchemy.url`` filled in. Stock ``python -m alembic -c my.ini``
also works with an ini holding ``script_location = core/reviews/migrations`` (run from the repository
root) and, optionally, ``sqlalchemy.url``; without it the URL comes from ``core.settings.review_db_url()``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from core.reviews.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from core.settings import review_db_url

    return review_db_url()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds (PostgreSQL: plain ALTER)
        transactional_ddl=True,  # SQLite DDL is transactional once BEGIN is emitted by us; PostgreSQL's always is
        compare_type=True,
    )
    with context.begin_transaction():  # a no-op when the caller already began a transaction
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from core.reviews.store import make_engine, write_transaction

    engine = make_engine(_url())
    try:
        with write_transaction(engine) as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
