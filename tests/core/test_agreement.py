"""Agreement statistics on hand-computed tables (core.reviews.agreement)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from core.reviews.agreement import (
    cohen_interval,
    cohen_kappa,
    disagreement_cases,
    fleiss_kappa,
    model_agreement,
    reader_agreement,
    reader_label,
    wilson_interval,
)

# Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 cases, 14 readers, 5 categories.
FLEISS_TABLE = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def review(reviewer, case, predicted, corrected=None, task="cxr", model="m", version="1"):
    return SimpleNamespace(reviewer=reviewer, case_hash=case, predicted_label=predicted, corrected_label=corrected,
                           task=task, model_name=model, model_version=version)


def test_fleiss_kappa_of_the_worked_example():
    # P-bar = 0.378, P-bar_e = 0.213: kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))  # unequal readers per case
    assert math.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category throughout: undefined


def test_cohen_kappa_of_a_two_by_two_table():
    # 50 cases: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> po 0.70, pe 0.50, kappa 0.40
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    interval = cohen_interval(a, b, samples=500)
    assert interval.low < 0.4 < interval.high and interval.n == 50
    assert cohen_interval(a, b, samples=500) == interval  # seeded: the page shows the same interval on reload
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))


def test_wilson_interval_of_eight_in_ten():
    interval = wilson_interval(8, 10)
    assert (interval.estimate, round(interval.low, 3), round(interval.high, 3)) == (0.8, 0.490, 0.943)
    assert wilson_interval(0, 5).low == 0.0 and wilson_interval(5, 5).high == 1.0


def test_reader_vs_model_confusion_and_rate_per_model_version():
    reviews = [review("a", "c1", "covid"), review("a", "c2", "covid", "normal"), review("b", "c1", "covid"),
               review("a", "c3", "normal", version="2")]
    first, second = model_agreement(reviews)
    assert (first.model_version, first.labels) == ("1", ["covid", "normal"])
    assert first.confusion == [[2, 0], [1, 0]]  # rows reader, columns model
    assert first.agreement.estimate == pytest.approx(2 / 3) and first.agreement.n == 3
    assert second.model_version == "2" and second.agreement.estimate == 1.0
    assert reader_label(reviews[1]) == "normal" and reader_label(reviews[0]) == "covid"


def test_reader_agreement_pairs_and_fleiss_over_shared_cases():
    labels = {"a": ["covid", "normal", "tb", "covid"], "b": ["covid", "tb", "tb", "normal"], "c": ["covid", "normal", "tb", "covid"]}
    reviews = [review(r, f"case{i}", "covid", label) for r, row in labels.items() for i, label in enumerate(row)]
    reviews.append(review("a", "ct-case", "covid", task="ct-slice"))  # another task: never mixed in
    results = reader_agreement(reviews, samples=200)
    cohen = {r.readers: r for r in results if r.method == "cohen"}
    assert set(cohen) == {("a", "b"), ("a", "c"), ("b", "c")} and all(r.task == "cxr" for r in results)
    assert cohen[("a", "c")].kappa.estimate == pytest.approx(1.0)
    assert cohen[("a", "b")].kappa.estimate == pytest.approx(cohen_kappa(labels["a"], labels["b"]))
    (fleiss,) = [r for r in results if r.method == "fleiss"]
    table = np.array([[3, 0, 0], [0, 2, 1], [0, 0, 3], [2, 1, 0]])  # covid / normal / tb counts per case
    # P-bar = (1 + 1/3 + 1 + 1/3) / 4 = 2/3; P-bar_e = (5^2 + 3^2 + 4^2) / 12^2 = 50/144: kappa = 0.4894
    assert fleiss.kappa.estimate == pytest.approx(fleiss_kappa(table)) == pytest.approx(0.4894, abs=1e-4)
    assert fleiss.readers == ("a", "b", "c") and fleiss.kappa.low <= 0.4894 <= fleiss.kappa.high
    cases = disagreement_cases(reviews)
    assert cases["readers"] == ["case1", "case3"] and "case2" in cases["model"]
