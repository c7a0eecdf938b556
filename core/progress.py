"""Progress bars that help on a terminal and stay sparse in a log file (``nohup``, CI)."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 60.0  # off a terminal, at most one line a minute per bar instead of one per redraw


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm`` as given on a terminal; otherwise redrawn at most every ``LOG_INTERVAL_S`` seconds."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
    return tqdm(iterable, **kwargs)
