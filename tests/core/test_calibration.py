"""Temperature scaling and calibration error (``core.calibration``) with hand-checkable numbers."""

import math

import numpy as np
import pytest

from core.calibration import (
    TEMPERATURE_BOUNDS,
    check_calibration,
    class_logits,
    fit_temperature,
    negative_log_likelihood,
    probabilities,
    probability_note,
    reliability,
    temperature_of,
    top_label_reliability,
)
from core.registry import ModelCard


def test_softmax_with_a_temperature_by_hand():
    # softmax((2, 0, 0) / 2) = (e, 1, 1) / (e + 2)
    e = math.e
    assert np.allclose(probabilities(np.array([2.0, 0.0, 0.0]), "softmax", 2.0), [e / (e + 2), 1 / (e + 2), 1 / (e + 2)])
    assert np.allclose(probabilities(np.array([2.0, 0.0, 0.0]), "softmax"), np.array([e * e, 1, 1]) / (e * e + 2))


def test_sigmoid_with_a_temperature_by_hand():
    # one logit z = 2 for the second class: sigmoid(2 / 2) = 1 / (1 + e^-1) = 0.731059
    p = probabilities(np.array([2.0]), "sigmoid", 2.0)
    assert np.allclose(p, [1 - 0.7310586, 0.7310586])
    assert np.allclose(class_logits(np.array([[2.0], [-1.0]]), "sigmoid"), [[0, 2], [0, -1]])
    assert probabilities(np.array([[2.0], [-1.0]]), "sigmoid").shape == (2, 2)


def test_temperature_never_changes_the_predicted_class():
    logits = np.random.default_rng(0).normal(0, 3, (200, 5))
    for t in (0.3, 1.0, 4.0):
        assert (probabilities(logits, "softmax", t).argmax(1) == logits.argmax(1)).all()


def test_temperature_must_be_positive():
    with pytest.raises(ValueError):
        probabilities(np.zeros(3), "softmax", 0.0)
    with pytest.raises(ValueError):
        probabilities(np.zeros(3), "relu")


def _sampled(rng, logits):
    """Labels drawn from softmax(logits): these logits are calibrated by construction."""
    p = probabilities(logits, "softmax")
    return np.array([rng.choice(len(row), p=row) for row in p])


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_fit_recovers_the_temperature_of_over_and_under_confident_logits(scale):
    rng = np.random.default_rng(1)
    true = rng.normal(0, 2, (6000, 3))
    labels = _sampled(rng, true)
    t = fit_temperature(true * scale, labels, "softmax")  # logits scaled by s need T = s
    assert t == pytest.approx(scale, rel=0.08)
    assert (negative_log_likelihood(true * scale, labels, "softmax", t)
            < negative_log_likelihood(true * scale, labels, "softmax", 1.0))


def test_fit_recovers_a_sigmoid_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 6000)
    labels = (rng.random(6000) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature((4.0 * z)[:, None], labels, "sigmoid") == pytest.approx(4.0, rel=0.08)


def test_fit_is_the_nll_minimum():
    rng = np.random.default_rng(3)
    true = rng.normal(0, 1, (300, 4))
    logits, labels = 2.5 * true, _sampled(rng, true)
    t = fit_temperature(logits, labels, "softmax")
    best = negative_log_likelihood(logits, labels, "softmax", t)
    for other in (t * 0.95, t * 1.05):
        assert best <= negative_log_likelihood(logits, labels, "softmax", other)


def test_logits_unrelated_to_the_labels_go_to_the_upper_bound():
    rng = np.random.default_rng(4)  # random labels: the best the model can say is "uniform", T -> infinity
    t = fit_temperature(rng.normal(0, 3, (300, 4)), rng.integers(0, 4, 300), "softmax")
    assert t == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)


def test_ece_of_a_hand_made_table():
    # four cases at 0.95 with 3 right (acc 0.75), two at 0.55 with 1 right (acc 0.5):
    # ECE = 4/6 * |0.75 - 0.95| + 2/6 * |0.5 - 0.55| = 0.13333 + 0.01667 = 0.15
    ece, table = reliability([0.95, 0.95, 0.95, 0.95, 0.55, 0.55], [1, 1, 1, 0, 1, 0])
    assert ece == pytest.approx(0.15)
    assert len(table) == 15 and table[14]["n"] == 4 and table[8]["n"] == 2
    assert table[14]["accuracy"] == pytest.approx(0.75) and table[8]["confidence"] == pytest.approx(0.55)
    assert sum(row["n"] for row in table) == 6


def test_top_label_reliability_of_probabilities():
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])  # top labels 1, 0, 1 at 0.9, 0.8, 0.7
    ece, _ = top_label_reliability(probs, [1, 1, 1])  # right, wrong, right: 1/3 (0.1 + 0.8 + 0.3)
    assert ece == pytest.approx((0.1 + 0.8 + 0.3) / 3)


def _card(**changes):
    return ModelCard(**{"name": "c", "version": "1", "task": "cxr-classification", "architecture": "resnet34",
                        "architecture_config": {}, "classes": ["a", "b"], "input_size": 64, "preprocessing": "",
                        "files": {}, "training_data": "", "training_command": "", **changes})


def test_card_temperature_and_note():
    assert temperature_of(_card()) == 1.0
    assert probability_note(_card()).startswith("uncalibrated")
    card = _card(calibration={"temperature": 1.5, "fitted_on": "val, 40 images"})
    assert temperature_of(card) == 1.5
    assert probability_note(card) == "calibrated (temperature 1.5 fitted on val, 40 images)"


@pytest.mark.parametrize("entry, ok", [(None, True), ({"temperature": 2}, True), ({"temperature": 0}, False),
                                       ({"temperature": -1.0}, False), ({"temperature": float("nan")}, False),
                                       ({"temperature": "2"}, False), ({}, False), ({"temperature": True}, False)])
def test_check_calibration(entry, ok):
    assert (check_calibration(entry) is None) == ok
