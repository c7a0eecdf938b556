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
