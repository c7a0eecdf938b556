"""Alembic's command line for the review log, without an alembic.ini.

    python -m core.reviews current
    python -m core.reviews upgrade head
    python -m core.reviews --url sqlite:////path/to/reviews.sqlite history --verbose
    python -m core.reviews revision --rev-id 0002 -m "describe the change"

The database URL is ``--url`` or else ``core.settings.review_db_url()`` (CHEST_REVIEW_DB_URL /
CHEST_REVIEW_DB). Every other argument is passed to Alembic unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from alembic.config import CommandLine

from core.reviews.store import alembic_config


def main(argv: Sequence[str] | None = None) -> None:
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


if __name__ == "__main__":
    main(sys.argv[1:])
