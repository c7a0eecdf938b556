"""Alembic's command line for the review log, without an alembic.ini.

    python -m core.reviews current
    python -m core.reviews upgrade head
    python -m core.reviews --url sqlite:////path/to/reviews.sqlite history --verbose
    python -m core.reviews revision --rev-id 0002 -m "describe the change"
    python -m core.reviews stress --url URL_OF_A_SCRATCH_DATABASE --writers 8 --reviews 250

The database URL is ``--url`` or else ``core.settings.review_db_url()`` (CHEST_REVIEW_DB_URL /
CHEST_REVIEW_DB). Every other argument is passed to Alembic unchanged, except the ``stress``
command (ours, not Alembic's): concurrent writer processes, then a check that no row was lost or
duplicated, and the wall time and reviews/s (see ``core.reviews.stress``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alembic.config import CommandLine

from core.reviews.store import alembic_config


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _is_stress(argv):
        sys.exit(stress_main(argv))
    cli = CommandLine(prog="python -m core.reviews")
    cli.parser.add_argument("--url", help="SQLAlchemy URL of the review database")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    if options.url:
        url = options.url
    else:
        from core.settings import review_db_url

        url = review_db_url()
    config = alembic_config(url)
    config.cmd_opts = options
    cli.run_cmd(config, options)


def _is_stress(argv: list[str]) -> bool:
    """True for ``stress ...`` and ``--url URL stress ...`` (the command may follow the global --url)."""
    rest = argv[2:] if argv[:1] == ["--url"] else argv[1:] if argv[:1] and argv[0].startswith("--url=") else argv
    return rest[:1] == ["stress"]


def stress_main(argv: list[str]) -> int:
    from core.reviews.stress import StressRefused, run_stress

    parser = argparse.ArgumentParser(prog="python -m core.reviews stress", description=__doc__)
    parser.add_argument("--url", help="SQLAlchemy URL of a throw-away review database")
    parser.add_argument("--writers", type=int, default=8, help="writer processes (default 8)")
    parser.add_argument("--reviews", type=int, default=250, help="new reviews per writer (default 250)")
    options = parser.parse_args([arg for arg in argv if arg != "stress"])
    if not options.url:
        parser.error("--url is required: the stress run's rows can never be deleted, so name a scratch database")
    try:
        report = run_stress(options.url, writers=options.writers, reviews_per_writer=options.reviews)
    except StressRefused as error:
        print(error, file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    main(sys.argv[1:])
