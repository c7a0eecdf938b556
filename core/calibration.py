"""Temperature scaling and top-label calibration error (no Streamlit, no torch).

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, arXiv:1706.04599)
divides a classifier's logits by one number T > 0 before the softmax or sigmoid. T > 1 softens
over-confident outputs, T < 1 sharpens under-confident ones; the argmax (the predicted class, the
Grad-CAM target) never changes. T is fitted on the validation split by minimising the negative
log-likelihood; the test split only reports the effect.

A card's ``calibration`` entry (``core.registry.ModelCard.calibration``, written by
``python -m training calibrate``) holds T and what it was measured on::

    {"method": "temperature scaling", "temperature": 1.7, "fitted_on": "val (1298 images)",
     "evaluated_on": "test (1147 images)", "bins": 15, "ece_before": 0.08, "ece_after": 0.03,
     "nll_before": ..., "nll_after": ..., "accuracy": ..., "reliability": {"before": [...], "after": [...]}}

The temperature applies to the logits of any classifier card, whatever its pipeline (X-ray, CT slice,
CT volume): ``probabilities(logits, card.output, temperature_of(card))``.

Calibration error: top-label expected calibration error over ``ECE_BINS`` equal-width confidence bins
over (0, 1] (the first one closed), ECE = sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|.
For a sigmoid (two-class) model the top label's confidence is max(p, 1 - p).
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the fit searches log T between these


def class_logits(logits, output: str) -> np.ndarray:
    """(N, K) logits whose softmax gives the class probabilities.

    ``softmax``: the network's K logits as they are. ``sigmoid``: one logit z for the second class,
    written as the pair (0, z), since softmax((0, z) / T) = (1 - sigmoid(z / T), sigmoid(z / T)).
    """
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    if output == "sigmoid":
        z = logits[:, :1]
        return np.concatenate([np.zeros_like(z), z], axis=1)
    if output != "softmax":
        raise ValueError(f"output must be softmax or sigmoid, not {output!r}")
    return logits


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def probabilities(logits, output: str, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits`` divided by ``temperature``: (K,) for one case's logits, (N, K) for a batch."""
    if not temperature > 0:
        raise ValueError(f"a temperature must be positive, not {temperature}")
    single = np.asarray(logits).ndim == 1
    probs = np.exp(_log_softmax(class_logits(logits, output) / temperature))
    return probs[0] if single else probs


def negative_log_likelihood(logits, targets, output: str, temperature: float = 1.0) -> float:
    """Mean -log p(true class) of the temperature-scaled probabilities (``targets``: class indices)."""
    targets = np.asarray(targets, dtype=np.int64)
    log_p = _log_softmax(class_logits(logits, output) / temperature)
    return float(-log_p[np.arange(len(targets)), targets].mean())


def fit_temperature(logits, targets, output: str) -> float:
    """The T in ``TEMPERATURE_BOUNDS`` minimising the NLL of ``targets`` (a bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        raise ValueError("no cases to fit a temperature on")
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    fit = minimize_scalar(lambda log_t: negative_log_likelihood(logits, targets, output, math.exp(log_t)),
                          bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(fit.x))


def reliability(confidence, correct, bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """Top-label expected calibration error and its table: equal-width bins over (0, 1], the first one closed.

    ECE = sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|; empty bins are listed with n = 0.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        pick = index == b
        n = int(pick.sum())
        row = {"low": b / bins, "high": (b + 1) / bins, "n": n,
               "confidence": float(confidence[pick].mean()) if n else None,
               "accuracy": float(correct[pick].mean()) if n else None}
        if n:
            ece += n / len(confidence) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return float(ece), table


def top_label_reliability(probs, targets, bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """``reliability`` of (N, K) class probabilities against class indices."""
    probs = np.asarray(probs, dtype=float)
    return reliability(probs.max(1), probs.argmax(1) == np.asarray(targets), bins)


def temperature_of(card) -> float:
    """The card's fitted temperature; 1.0 (the network's own probabilities) when it has none."""
    calibration = getattr(card, "calibration", None)
    return float(calibration["temperature"]) if calibration else 1.0


def probability_note(card) -> str:
    """What the shown probabilities are, in a few words for the page (``card`` a classifier's card)."""
    calibration = getattr(card, "calibration", None)
    if not calibration:
        return "uncalibrated (the network's own probabilities: no temperature fitted)"
    return f"calibrated (temperature {calibration['temperature']:.3g} fitted on {calibration.get('fitted_on', 'val')})"


def check_calibration(calibration) -> str | None:
    """Why a card's ``calibration`` entry is unusable, or None when it is fine (None itself is fine)."""
    if calibration is None:
        return None
    if not isinstance(calibration, dict) or "temperature" not in calibration:
        return "its calibration entry has no temperature"
    t = calibration["temperature"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        return f"its calibration temperature {t!r} is not a positive number"
    return None
