"""End-to-end analyses, one module per kind of study (``cxr``, ``ct_slice``, ``ct_volume``)."""

from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def timed(timings: dict, stage: str):
    """Record the milliseconds the block took as ``timings[stage]`` (the per-stage figures every result carries)."""
    started = time.perf_counter()
    yield
    timings[stage] = (time.perf_counter() - started) * 1000.0


class CovidCall:
    """``prob_covid`` and ``predicted_label`` of a result with ``probabilities`` ({class: p}; empty when no
    classifier ran), shared by the CT results."""

    probabilities: dict[str, float]

    @property
    def prob_covid(self) -> float | None:
        return self.probabilities.get("covid")

    @property
    def predicted_label(self) -> str | None:
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else None
