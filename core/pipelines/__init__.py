"""End-to-end analyses, one module per kind of study (``cxr``, ``ct_slice``)."""

from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def timed(timings: dict, stage: str):
    """Record the milliseconds the block took as ``timings[stage]`` (the per-stage figures every result carries)."""
    started = time.perf_counter()
    yield
    timings[stage] = (time.perf_counter() - started) * 1000.0
