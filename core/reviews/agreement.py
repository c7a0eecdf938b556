"""Agreement between readers and models, and between readers: what the analytics page shows.

Each current review gives a reader's label for a case: the model's label when the reader agreed, the
corrected label otherwise (``reader_label``). From those:

* reader vs model, per model and version: the confusion matrix (rows the reader's label, columns the
  model's) and the agreement rate with a Wilson 95 % interval;
* reader vs reader, per task: Cohen's kappa for cases read by the same two readers, Fleiss' kappa for
  cases read by the same number of readers (three or more), each with a 95 % bootstrap interval over
  cases (seeded, so a page reload shows the same interval);
* the cases driving disagreement (readers disagreeing with each other or with the model).

No Streamlit here. Cohen's kappa is scikit-learn's; Fleiss' kappa (Fleiss 1971) is written out below
(scikit-learn has none, and statsmodels would be a dependency for ten lines).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sklearn.metrics import cohen_kappa_score

BOOTSTRAP_SAMPLES = 2000
SEED = 0
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    estimate: float  # NaN when undefined (e.g. every reader gave one and the same label to every case)
    low: float
    high: float
    n: int  # cases


@dataclass(frozen=True)
class ModelAgreement:
    model_name: str
    model_version: str
    labels: list[str]  # row and column order of ``confusion``
    confusion: list[list[int]]  # rows: reader's label, columns: model's label
    agreement: Interval  # share of reviews where the reader's label is the model's


def reader_label(review) -> str:
    """The label a reader gave the case: the model's when they agreed, their correction otherwise."""
    return review.corrected_label or review.predicted_label


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Interval:
    """A proportion with its Wilson score interval (sound at 0 %, 100 % and small n)."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def model_agreement(reviews: Sequence) -> list[ModelAgreement]:
    """Reader vs model per (model name, version), over the current reviews given."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for review in reviews:
        groups[(review.model_name, review.model_version)].append(review)
    out = []
    for (name, version), group in sorted(groups.items()):
        labels = sorted({r.predicted_label for r in group} | {reader_label(r) for r in group})
        index = {label: i for i, label in enumerate(labels)}
        confusion = np.zeros((len(labels), len(labels)), dtype=int)
        for r in group:
            confusion[index[reader_label(r)], index[r.predicted_label]] += 1
        agreed = sum(reader_label(r) == r.predicted_label for r in group)
        out.append(ModelAgreement(name, version, labels, confusion.tolist(), wilson_interval(agreed, len(group))))
    return out


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of a (cases x categories) table of how many readers put each case in each category.

    Every case needs the same number of readers (at least two). NaN when chance agreement is 1.
    """
    counts = np.asarray(counts, dtype=np.float64)
    readers = counts.sum(1)
    if counts.ndim != 2 or len(counts) == 0 or readers.min() != readers.max() or readers[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of readers for every case")
    n, m = counts.shape[0], readers[0]
    p_category = counts.sum(0) / (n * m)
    p_case = ((counts * counts).sum(1) - m) / (m * (m - 1))
    observed, chance = p_case.mean(), float((p_category ** 2).sum())
    return math.nan if chance >= 1.0 else float((observed - chance) / (1 - chance))


def cohen_kappa(labels_a: Sequence[str], labels_b: Sequence[str]) -> float:
    """Cohen's kappa of two readers' labels for the same cases; NaN when chance agreement is 1."""
    if len(set(labels_a) | set(labels_b)) < 2:
        return math.nan  # one label throughout: kappa is 0/0
    return float(cohen_kappa_score(list(labels_a), list(labels_b)))


def _bootstrap(statistic, n: int, estimate: float, samples: int, seed: int) -> Interval:
    """Percentile interval of ``statistic(indices)`` over cases resampled with replacement."""
    if n == 0 or math.isnan(estimate):
        return Interval(estimate, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(samples)]
    values = np.asarray([v for v in values if not math.isnan(v)])
    if values.size == 0:
        return Interval(estimate, math.nan, math.nan, n)
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(estimate, float(low), float(high), n)


def cohen_interval(labels_a: Sequence[str], labels_b: Sequence[str], samples: int = BOOTSTRAP_SAMPLES,
                   seed: int = SEED) -> Interval:
    a, b = np.asarray(labels_a, dtype=object), np.asarray(labels_b, dtype=object)
    return _bootstrap(lambda i: cohen_kappa(a[i], b[i]), len(a), cohen_kappa(a, b), samples, seed)


def fleiss_interval(counts: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED) -> Interval:
    counts = np.asarray(counts)
    return _bootstrap(lambda i: fleiss_kappa(counts[i]), len(counts), fleiss_kappa(counts), samples, seed)


@dataclass(frozen=True)
class ReaderAgreement:
    task: str
    readers: tuple[str, ...]  # Cohen: the two readers; Fleiss: every reader who read those cases
    method: str  # "cohen" or "fleiss"
    kappa: Interval
    case_hashes: list[str]


def reader_agreement(reviews: Sequence, samples: int = BOOTSTRAP_SAMPLES) -> list[ReaderAgreement]:
    """Between readers, per task: Cohen's kappa for each pair of readers over the cases both read, and
    Fleiss' kappa over the cases read by three or more readers (grouped by how many read them)."""
    by_case: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for review in reviews:
        by_case[(review.task, review.case_hash)][review.reviewer] = reader_label(review)
    out = []
    for task in sorted({task for task, _ in by_case}):
        cases = {case: readers for (t, case), readers in by_case.items() if t == task}
        names = sorted({name for readers in cases.values() for name in readers})
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                shared = sorted(c for c, readers in cases.items() if first in readers and second in readers)
                if shared:
                    a = [cases[c][first] for c in shared]
                    b = [cases[c][second] for c in shared]
                    out.append(ReaderAgreement(task, (first, second), "cohen", cohen_interval(a, b, samples), shared))
        by_count: dict[int, list[str]] = defaultdict(list)
        for case, readers in cases.items():
            if len(readers) >= 3:
                by_count[len(readers)].append(case)
        for count, shared in sorted(by_count.items()):
            shared = sorted(shared)
            categories = sorted({label for c in shared for label in cases[c].values()})
            table = np.array([[list(cases[c].values()).count(k) for k in categories] for c in shared])
            readers = tuple(sorted({name for c in shared for name in cases[c]}))
            out.append(ReaderAgreement(task, readers, "fleiss", fleiss_interval(table, samples), shared))
    return out


def agreement_over_time(reviews: Sequence) -> list[dict]:
    """Reader vs model agreement per ISO week of the review's date (UTC): week start, reviews, rate and interval."""
    weeks: dict = defaultdict(list)
    for review in reviews:
        day = review.created_at.date()
        weeks[day - timedelta(days=day.weekday())].append(reader_label(review) == review.predicted_label)
    return [{"week": week, "n": len(agreed), "agreement": wilson_interval(sum(agreed), len(agreed))}
            for week, agreed in sorted(weeks.items())]


def disagreement_cases(reviews: Sequence) -> dict[str, list[str]]:
    """Case hashes where readers disagree with each other, and where a reader disagrees with the model."""
    labels: dict[str, set[str]] = defaultdict(set)
    with_model: set[str] = set()
    for review in reviews:
        labels[review.case_hash].add(reader_label(review))
        if reader_label(review) != review.predicted_label:
            with_model.add(review.case_hash)
    return {"readers": sorted(c for c, found in labels.items() if len(found) > 1), "model": sorted(with_model)}
