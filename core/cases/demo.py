"""A realistic multi-reader data set for demos, screenshots and tests: stored cases and three readers' reviews.

Usage::

    report = seed_demo("sqlite:///var/demo.sqlite", Path("var/demo-cases"))                 # the bundled models
    report = seed_demo(url, folder, registry=None)         # scripted predictions: fast, no models (tests)

    python -m core.cases seed-demo --db sqlite:///var/demo.sqlite [--store DIR] [--scripted]

The cases: the bundled real demo cases (``demo_cases/``: 10 chest X-rays, 2 CT slices) plus a few
synthetic phantoms (two X-rays, one CT slice, one small CT volume), each analysed by the app's own
pipelines (``registry`` given) or given a scripted prediction (``registry=None``; model names then end
in ``-scripted`` and half the cases name version 1.1, so the version filter has two choices).

The readers (``DEMO_READERS``) read over six weeks: the first reads every case, the second about
four in five, the third about three in five, so "not yet reviewed by me" differs per reader. Each
gives the case's true label (the demo case's, or the phantom's) except for a seeded share of slips,
so readers disagree with the model where it is wrong and with each other now and then. One reader
amends one review, as people do. Deterministic in ``seed``.

Refuses a database that already holds reviews unless ``allow_existing``: demo reviews must never mix
into a real review log by accident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from core.cases.store import CasePrediction, CaseStore
from core.errors import ReviewLogError
from core.reviews import ReviewInput, ReviewStore

DEMO_READERS = ("dr-ana", "dr-ben", "dr-chen")
READ_SHARE = (1.0, 0.8, 0.6)  # share of the cases each reader reads
SLIP_RATE = (0.1, 0.2, 0.3)  # share of their reads where a reader gives a label other than the true one
WEEKS = 6
TASK_CLASSES = {"cxr": ("normal", "covid", "tb", "bacterial", "viral"), "ct-slice": ("non-covid", "covid"),
                "ct-volume": ("cap", "covid")}


class DemoSeedError(ReviewLogError):
    """The demo data set was not written (the database already holds reviews, or a case cannot be analysed)."""


@dataclass(frozen=True)
class DemoCase:
    task: str
    truth: str  # the label readers give unless they slip
    load: Callable[[], object]  # -> Study or Volume


@dataclass(frozen=True)
class SeedReport:
    cases: int
    reviews: int
    readers: tuple[str, ...]


def demo_case_list() -> list[DemoCase]:
    """The real demo cases (when bundled), then the synthetic phantoms; in a fixed order."""
    from core import demo_cases
    from core.ct_phantoms import make_ct_phantom
    from core.ct_volume_phantoms import DEMO_SHAPE, DEMO_SPACING_MM, make_ct_volume
    from core.io import load_image
    from core.phantoms import make_phantom

    listed = [DemoCase(case.task, case.label, lambda case=case: load_image(case.read_bytes(), case.file))
              for case in demo_cases.demo_cases()]
    listed += [
        DemoCase("cxr", "covid", lambda: make_phantom("covid", seed=1).to_study()),
        DemoCase("cxr", "normal", lambda: make_phantom("normal", seed=2).to_study()),
        DemoCase("ct-slice", "non-covid", lambda: make_ct_phantom("non-covid", seed=0).to_study()),
        DemoCase("ct-volume", "covid", lambda: make_ct_volume("covid", 0, shape=DEMO_SHAPE, spacing_mm=DEMO_SPACING_MM,
                                                              infection_ratio=0.12).to_volume()),
    ]
    return listed


def seed_demo(url: str, store_dir: str | Path, *, registry=None, seed: int = 0, retention_days: int = 365,
              allow_existing: bool = False, now: datetime | None = None,
              cases: list[DemoCase] | None = None) -> SeedReport:
    """Write the demo cases and reviews into the review log at ``url`` and the case store at ``store_dir``."""
    end = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    clock = _Clock(end - timedelta(weeks=WEEKS))
    rng = np.random.default_rng(seed)
    with ReviewStore(url, clock=clock) as reviews:
        if reviews.current_reviews() and not allow_existing:
            raise DemoSeedError("This review log already holds reviews; the demo data set goes into an empty one "
                                "(or pass --allow-existing).")
        store = CaseStore(reviews, store_dir, retention_days=retention_days, clock=clock)
        chosen = demo_case_list() if cases is None else cases
        step = timedelta(weeks=WEEKS) / (len(chosen) * (len(DEMO_READERS) + 1) + 1)
        analyse = _analyser(registry) if registry is not None else None
        written = 0
        for index, case in enumerate(chosen):
            image = case.load()
            if analyse is not None:
                prediction = analyse(case.task, image)
            else:
                prediction = scripted_prediction(case.task, case.truth, index, rng)
            clock.advance(step)
            store.save_case(image, prediction)
            for reader, share, slip in zip(DEMO_READERS, READ_SHARE, SLIP_RATE):
                clock.advance(step)
                if index > 0 and rng.random() >= share:  # everyone reads the first case
                    continue
                label = _reader_label(case, prediction, slip, rng)
                saved = reviews.add_review(_review(reader, image.case_hash, prediction, label, rng))
                written += 1
                if index == 1 and reader == DEMO_READERS[0]:  # a second look, as an amendment
                    reviews.amend_review(saved.review_uid, saved.to_input(confidence=5, note="Second look: sure."))
    return SeedReport(len(chosen), written, DEMO_READERS)


def scripted_prediction(task: str, truth: str, index: int, rng: np.random.Generator) -> CasePrediction:
    """A plausible model answer without a model: right on about two cases in three, confidence spread out."""
    classes = TASK_CLASSES[task]
    truth = truth if truth in classes else classes[0]
    top = truth if index % 3 != 2 else classes[(classes.index(truth) + 1) % len(classes)]  # every third case wrong
    weights = rng.dirichlet(np.ones(len(classes)))
    top_share = float(rng.uniform(0.4, 0.97))
    rest = [c for c in classes if c != top]
    others = weights[: len(rest)] / weights[: len(rest)].sum() * (1 - top_share)
    probabilities = {top: top_share, **{c: float(p) for c, p in zip(rest, others)}}
    prefix = {"cxr": "manet-demo", "ct-slice": "multisource-demo", "ct-volume": "dual-sampling-demo"}[task]
    version = "1.1" if index % 2 else "1.0"
    return CasePrediction(task=task, model_name=f"{prefix}-scripted", model_version=version,
                          weights_sha256=_digest(f"{prefix}-{version}"), predicted_label=top,
                          predicted_probabilities={c: probabilities[c] for c in classes})


def _analyser(registry) -> Callable[[str, object], CasePrediction]:
    """The pages' own pipelines, built once each, turning an image into the prediction a page would show."""
    from core.reviews.reviewed_model import reviewed_model

    pipelines: dict[str, object] = {}

    def pipeline(task: str):
        if task not in pipelines:
            if task == "cxr":
                from core.pipelines.cxr import CxrPipeline

                pipelines[task] = CxrPipeline(registry)
            elif task == "ct-slice":
                from core.pipelines.ct_slice import CtSlicePipeline

                pipelines[task] = CtSlicePipeline(registry)
            else:
                from core.pipelines.ct_volume import CtVolumePipeline

                pipelines[task] = CtVolumePipeline(registry)
        return pipelines[task]

    def analyse(task: str, image) -> CasePrediction:
        if task == "cxr":
            result = pipeline(task).analyse(image, explain=False)
            card = result.classifier
        elif task == "ct-slice":
            result = pipeline(task).analyse(image)
            card = result.cards.get("classifier")
        else:
            from core.pipelines.ct_volume import SAMPLINGS

            result = pipeline(task).analyse(image)
            samplings = [s for s in SAMPLINGS if s in result.model_probabilities]
            card = reviewed_model([result.cards[s] for s in samplings]) if samplings else None
        if card is None or not result.probabilities:
            raise DemoSeedError(f"The registry has no classifier for the {task} demo cases.")
        return CasePrediction(task=task, model_name=card.name, model_version=card.version,
                              weights_sha256=card.weights_sha256, predicted_label=result.predicted_label,
                              predicted_probabilities=result.probabilities)

    return analyse


def _reader_label(case: DemoCase, prediction: CasePrediction, slip: float, rng: np.random.Generator) -> str:
    classes = list(prediction.predicted_probabilities)
    truth = case.truth if case.truth in classes else "other"
    if rng.random() >= slip:
        return truth
    return str(rng.choice([c for c in classes if c != truth]))


def _review(reader: str, case_hash: str, prediction: CasePrediction, label: str,
            rng: np.random.Generator) -> ReviewInput:
    agree = label == prediction.predicted_label
    return ReviewInput(
        reviewer=reader, case_hash=case_hash, task=prediction.task, model_name=prediction.model_name,
        model_version=prediction.model_version, weights_sha256=prediction.weights_sha256,
        predicted_probabilities=prediction.predicted_probabilities, predicted_label=prediction.predicted_label,
        verdict="agree" if agree else "disagree", corrected_label=None if agree else label,
        confidence=int(rng.integers(2, 6)), where_wrong=None if agree else "demo: label differs",
        note="Demo review (seeded data set).",
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Clock:
    """The seeded data set's time: moves forward only when told, so reviews spread over the weeks."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, step: timedelta) -> None:
        self.now += step

    def __call__(self) -> datetime:
        return self.now
