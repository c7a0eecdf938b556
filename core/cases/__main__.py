"""Case store commands.

    python -m core.cases purge [--db URL] [--store DIR] [--retention-days N]
        delete the pixel files of cases whose retention has ended and mark their rows (reviews stay)
    python -m core.cases seed-demo --db URL [--store DIR] [--scripted] [--allow-existing]
        a multi-reader demo data set (3 readers, disagreements) for screenshots and trials

``--db`` defaults to ``core.settings.review_db_url()``, ``--store`` to ``core.settings.case_store_dir()``
(for seed-demo with a SQLite ``--db``: ``cases/`` beside that file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import ChestReviewError


def _default_store(url: str) -> Path:
    from sqlalchemy.engine import make_url

    from core.settings import case_store_dir

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database).parent / "cases"
    return case_store_dir()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.cases", description="De-identified case store")
    commands = parser.add_subparsers(dest="command", required=True)
    purge = commands.add_parser("purge", help="apply the retention: delete expired cases' pixel files")
    seed = commands.add_parser("seed-demo", help="write a multi-reader demo data set")
    for sub in (purge, seed):
        sub.add_argument("--db", help="SQLAlchemy URL of the review log (default: the app's)")
        sub.add_argument("--store", type=Path, help="case store folder (default: the app's / beside --db)")
        sub.add_argument("--retention-days", type=int, help="default: CHEST_CASE_RETENTION_DAYS or 365")
    seed.add_argument("--scripted", action="store_true", help="scripted predictions instead of the bundled models")
    seed.add_argument("--allow-existing", action="store_true", help="also into a log that already holds reviews")
    seed.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)

    from core.settings import case_retention_days, review_db_url

    url = options.db or review_db_url()
    store_dir = options.store or _default_store(url)
    retention = options.retention_days or case_retention_days()
    try:
        if options.command == "purge":
            from core.cases.store import CaseStore
            from core.reviews import ReviewStore

            with ReviewStore(url) as reviews:
                report = CaseStore(reviews, store_dir, retention_days=retention).purge()
            print(f"{report.cases_purged} case(s) reached the end of their retention; {report.files_deleted} pixel "
                  f"file(s) and {report.orphans_deleted} orphan file(s) deleted from {store_dir}.")
        else:
            from core.cases.demo import seed_demo

            registry = None
            if not options.scripted:
                from core.registry import Registry
                from core.settings import weights_dir

                registry = Registry.open(weights_dir())
            report = seed_demo(url, store_dir, registry=registry, seed=options.seed, retention_days=retention,
                               allow_existing=options.allow_existing)
            print(f"Demo data set written: {report.cases} cases, {report.reviews} reviews by "
                  f"{', '.join(report.readers)}; case store {store_dir}.")
    except ChestReviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
