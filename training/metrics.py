"""Metrics for reports and model cards (scikit-learn where it has them)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    pred, target = pred.astype(bool), target.astype(bool)
    inter = np.logical_and(pred, target).sum()
    total = pred.sum() + target.sum()
    union = np.logical_or(pred, target).sum()
    if total == 0:
        return 1.0, 1.0
    return float(2 * inter / total), float(inter / union)


def segmentation_report(dices, ious, groups) -> dict:
    """Mean Dice/IoU overall and per group (class or source)."""
    out = {"n": len(dices), "dice": float(np.mean(dices)), "iou": float(np.mean(ious)), "per_group": {}}
    by_group = defaultdict(list)
    for dice, iou, group in zip(dices, ious, groups):
        by_group[group].append((dice, iou))
    for group, values in sorted(by_group.items()):
        arr = np.array(values)
        out["per_group"][group] = {"n": len(values), "dice": float(arr[:, 0].mean()), "iou": float(arr[:, 1].mean())}
    return out


def classification_report(y_true, probs, classes, sources=None, positive: str | None = "covid") -> dict:
    """Accuracy, per-class precision/recall/F1, confusion matrix, one-vs-rest AUC, per-source accuracy."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    y_pred = probs.argmax(1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1)),
        "classes": list(classes),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if len(classes) == 2:  # binary tasks: the positive class is the second one
        out["sensitivity"] = float(recall[1])
        out["specificity"] = float(recall[0])
    if positive in classes:
        index = classes.index(positive)
        binary = (y_true == index).astype(int)
        if 0 < binary.sum() < len(binary):
            out[f"{positive}_vs_rest_auc"] = float(roc_auc_score(binary, probs[:, index]))
    if sources is not None:
        out["per_source"] = {}
        sources = np.asarray(sources)
        for source in sorted(set(sources.tolist())):
            pick = sources == source
            out["per_source"][source] = {
                "n": int(pick.sum()),
                "accuracy": float((y_pred[pick] == y_true[pick]).mean()),
                "labels": sorted({classes[i] for i in y_true[pick]}),
                # What the model calls this source's images: a source predicted as one class whatever
                # its labels is a shortcut, visible even where accuracy looks fine.
                "predicted": {classes[i]: int((y_pred[pick] == i).sum()) for i in labels},
            }
    return out


def mean_and_spread(values) -> dict:
    """Mean, sample standard deviation, min and max over trials or folds."""
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(len(values)),
    }


# ---------------------------------------------------------------- Inf-Net's evaluation table
# Inf-Net (Fan et al., IEEE TMI 2020) reports Dice, sensitivity, specificity, S-alpha, E-phi mean and
# MAE per test slice, averaged over slices. Its evaluation code (MATLAB, ported to Python in the
# Inf-Net repository) min-max normalises every probability map, then averages Dice, sensitivity,
# specificity and the E-measure over 256 thresholds 1, 254/255, ..., 0 (``INFNET_THRESHOLDS``).
# Differences from that code, all on degenerate cases: it sets Dice, sensitivity and specificity to 0
# whenever no true positive exists (so an empty prediction of an empty mask scores 0, and a
# prediction missing the lesion has specificity 0); here Dice and sensitivity of an empty target are
# 1 when nothing is predicted (as ``dice_iou``), and specificity is always TN / (TN + FP). The
# E-measure divides by w h as the paper's Eq. does (the code divides by w h - 1, which lifts a
# perfect map to w h / (w h - 1): 1.00001 at 352 px).
INFNET_THRESHOLDS = np.linspace(1.0, 0.0, 256)
S_ALPHA = 0.5
_EPS = np.finfo(np.float64).eps


def _confusion_at(prob: np.ndarray, target: np.ndarray, thresholds) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) for ``prob >= t`` at every threshold (sorted counts, no loop over thresholds)."""
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    foreground, background = np.sort(prob[target]), np.sort(prob[~target])
    tp = foreground.size - np.searchsorted(foreground, thresholds, side="left")
    fp = background.size - np.searchsorted(background, thresholds, side="left")
    return tp, fp, foreground.size - tp, background.size - fp


def _ratio(numerator, denominator, empty: float = 1.0) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), empty)


def _binary_rates(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp)}


def sensitivity_specificity(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """TP / (TP + FN) and TN / (TN + FP) of two binary masks (1.0 when the denominator is empty)."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    tp, fp = np.sum(pred & target), np.sum(pred & ~target)
    fn, tn = np.sum(~pred & target), np.sum(~pred & ~target)
    return float(_ratio(tp, tp + fn)), float(_ratio(tn, tn + fp))


def _enhanced_alignment_sum(tp, fp, fn, tn) -> np.ndarray:
    """Sum over pixels of phi = (1 + xi)^2 / 4 with xi = 2 a b / (a^2 + b^2), a and b the pixel's
    demeaned prediction and target values (E-measure, Eqs. 3-6); only four (a, b) pairs exist."""
    tp, fp, fn, tn = (np.asarray(v, np.float64) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    positives = tp + fn
    if np.all(positives == 0):  # empty target: only the agreement on background counts
        return fn + tn
    if np.all(positives == n):  # full target
        return tp + fp
    mean_pred, mean_target = (tp + fp) / n, positives / n
    total = np.zeros_like(n)
    for count, pred_value, target_value in ((tp, 1, 1), (fp, 1, 0), (fn, 0, 1), (tn, 0, 0)):
        a, b = pred_value - mean_pred, target_value - mean_target
        xi = 2 * a * b / (a * a + b * b + _EPS)
        total = total + count * (1 + xi) ** 2 / 4
    return total


def e_measure(pred: np.ndarray, target: np.ndarray) -> float:
    """Enhanced-alignment measure E-phi of a binary map (Fan et al., IJCAI 2018): mean of phi over pixels.

    An empty target scores the fraction of pixels predicted background; a full target, the fraction
    predicted foreground (as the reference code).
    """
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    tp, fp, fn, tn = np.sum(pred & target), np.sum(pred & ~target), np.sum(~pred & target), np.sum(~pred & ~target)
    return float(_enhanced_alignment_sum(tp, fp, fn, tn) / target.size)


def mean_e_measure(prob: np.ndarray, target: np.ndarray, thresholds=INFNET_THRESHOLDS) -> float:
    """E-phi mean: the E-measure of ``prob >= t`` averaged over the thresholds (Inf-Net's "E-phi mean")."""
    target = np.asarray(target, bool)
    counts = _confusion_at(np.asarray(prob, np.float64), target, thresholds)
    return float(np.mean(_enhanced_alignment_sum(*counts) / target.size))


def _ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """S-measure's region similarity: 4 mu_x mu_y s_xy / ((mu_x^2 + mu_y^2)(s_x^2 + s_y^2)), sample (co)variances."""
    n = pred.size
    x, y = pred.mean(), target.mean()
    var_x = np.sum((pred - x) ** 2) / (n - 1 + _EPS)
    var_y = np.sum((target - y) ** 2) / (n - 1 + _EPS)
    cov = np.sum((pred - x) * (target - y)) / (n - 1 + _EPS)
    alpha = 4 * x * y * cov
    beta = (x * x + y * y) * (var_x + var_y)
    if alpha != 0:
        return float(alpha / (beta + _EPS))
    return 1.0 if beta == 0 else 0.0


def _object_score(values: np.ndarray) -> float:
    """2 mean / (mean^2 + 1 + std) (S-measure Eq. 7 with lambda = 0.5; sample std, 0 for one value)."""
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return float(2 * mean / (mean * mean + 1 + std + _EPS))


def _region_score(prob: np.ndarray, target: np.ndarray) -> float:
    """Four blocks split at the target's centroid, SSIM of each weighted by its area (S-measure Eq. 5).

    The centroid is rounded as the MATLAB reference does: 1-based mean, halves away from zero, so the
    top-left block holds rows and columns 0 .. Y - 1 and 0 .. X - 1.
    """
    h, w = target.shape
    if target.any():
        rows, cols = np.nonzero(target)
        y, x = int(np.floor(rows.mean() + 1 + 0.5)), int(np.floor(cols.mean() + 1 + 0.5))
    else:
        y, x = int(np.floor(h / 2 + 0.5)), int(np.floor(w / 2 + 0.5))
    score = 0.0
    for rows_slice, cols_slice in ((slice(0, y), slice(0, x)), (slice(0, y), slice(x, w)),
                                   (slice(y, h), slice(0, x)), (slice(y, h), slice(x, w))):
        block_target = target[rows_slice, cols_slice]
        if block_target.size:  # an empty block has weight 0
            score += block_target.size / (h * w) * _ssim(prob[rows_slice, cols_slice], block_target.astype(np.float64))
    return score


def s_measure(prob: np.ndarray, target: np.ndarray, alpha: float = S_ALPHA) -> float:
    """Structure measure S-alpha (Fan et al., ICCV 2017): alpha S_object + (1 - alpha) S_region, >= 0.

    S_object = mu O_fg + (1 - mu) O_bg with mu the target's foreground fraction, O_fg the object score
    of the prediction inside the target and O_bg that of 1 - prediction outside it. An empty target
    scores 1 - mean(prob); a full target, mean(prob).
    """
    prob, target = np.asarray(prob, np.float64), np.asarray(target, bool)
    mu = target.mean()
    if mu == 0:
        return float(1 - prob.mean())
    if mu == 1:
        return float(prob.mean())
    object_score = mu * _object_score(prob[target]) + (1 - mu) * _object_score(1 - prob[~target])
    return float(max(0.0, alpha * object_score + (1 - alpha) * _region_score(prob, target)))


def mean_absolute_error(prob: np.ndarray, target: np.ndarray) -> float:
    """MAE between the probability map and the binary target, per pixel."""
    return float(np.mean(np.abs(np.asarray(prob, np.float64) - np.asarray(target, np.float64))))


def min_max_map(prob: np.ndarray) -> np.ndarray:
    """The evaluation code's normalisation of a map to [0, 1]; a constant map is left as it is."""
    prob = np.asarray(prob, np.float64)
    low, high = prob.min(), prob.max()
    return (prob - low) / (high - low) if high > low else prob


def infection_metrics(prob: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """One slice's row of Inf-Net's table, plus the figures at the served ``threshold``.

    ``dice``, ``sensitivity``, ``specificity``, ``e_phi_mean``: means over ``INFNET_THRESHOLDS`` of the
    min-max-normalised map, ``s_alpha`` and ``mae`` on that map (as Inf-Net's evaluation code);
    ``*_at_threshold``: of ``prob >= threshold`` on the raw probability, the mask the app shows.
    """
    target = np.asarray(target, bool)
    normalised = min_max_map(prob)
    curves = _binary_rates(*_confusion_at(normalised, target, INFNET_THRESHOLDS))
    served = _binary_rates(*_confusion_at(np.asarray(prob, np.float64), target, [threshold]))
    return {
        **{name: float(values.mean()) for name, values in curves.items()},
        "s_alpha": s_measure(normalised, target),
        "e_phi_mean": mean_e_measure(normalised, target),
        "mae": mean_absolute_error(normalised, target),
        **{f"{name}_at_threshold": float(values[0]) for name, values in served.items()},
    }


INFNET_TABLE_COLUMNS = ("dice", "sensitivity", "specificity", "s_alpha", "e_phi_mean", "mae")


def infection_table(rows: list[dict], groups=None) -> dict:
    """Mean of every ``infection_metrics`` key over slices, overall and per group (e.g. source)."""

    def mean_of(selected):
        return {"n": len(selected), **{key: float(np.mean([r[key] for r in selected])) for key in selected[0]}}

    out = mean_of(rows) if rows else {"n": 0}
    if groups is not None:
        by_group = defaultdict(list)
        for row, group in zip(rows, groups):
            by_group[group].append(row)
        out["per_group"] = {group: mean_of(selected) for group, selected in sorted(by_group.items())}
    return out


def class_dice(pred_labels: np.ndarray, target_labels: np.ndarray, label: int) -> float | None:
    """Dice of one class of two label maps; None when the class is in neither (nothing to score)."""
    pred, target = np.asarray(pred_labels) == label, np.asarray(target_labels) == label
    if not pred.any() and not target.any():
        return None
    return dice_iou(pred, target)[0]


def multiclass_dice_report(preds: list[np.ndarray], targets: list[np.ndarray],
                           classes=("background", "ggo", "consolidation")) -> dict:
    """Per-class Dice of label maps (0 background, 1 GGO, 2 consolidation), foreground classes only.

    ``mean``: over the slices where the class is in the prediction or the target (a slice with no
    consolidation anywhere is not a perfect consolidation score); ``pooled``: one Dice over every
    pixel of every slice.
    """
    report = {}
    for label, name in enumerate(classes):
        if label == 0:
            continue
        scores = [d for d in (class_dice(p, t, label) for p, t in zip(preds, targets)) if d is not None]
        inter = sum(int(np.sum((p == label) & (t == label))) for p, t in zip(preds, targets))
        total = sum(int(np.sum(p == label) + np.sum(t == label)) for p, t in zip(preds, targets))
        report[name] = {"mean": float(np.mean(scores)) if scores else float("nan"), "n_slices": len(scores),
                        "pooled": float(2 * inter / total) if total else float("nan")}
    return report


# ---------------------------------------------------------------- binary classification at one threshold
BINARY_SCORES = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def binary_scores(y_true, prob, threshold: float = 0.5) -> dict[str, float]:
    """AUC, accuracy, sensitivity, specificity and F1 (positive class 1) at ``prob >= threshold``, the
    figures of paper 004's Tables II and III. NaN where a figure is undefined (AUC with one class; the
    sensitivity and F1 without positives, the specificity without negatives)."""
    from sklearn.metrics import f1_score, recall_score

    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    y_pred = (prob >= threshold).astype(int)
    positives, negatives = int(y_true.sum()), int((1 - y_true).sum())
    return {
        "n": len(y_true), "positives": positives,
        "auc": float(roc_auc_score(y_true, prob)) if positives and negatives else float("nan"),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "sensitivity": float(recall_score(y_true, y_pred, pos_label=1, zero_division=0)) if positives else float("nan"),
        "specificity": float(recall_score(y_true, y_pred, pos_label=0, zero_division=0)) if negatives else float("nan"),
        "f1": float(f1_score(y_true, y_pred, pos_label=1, zero_division=0)) if positives else float("nan"),
    }
