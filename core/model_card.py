"""A model card as Markdown, from a registry entry (shown in the app and written into docs)."""

from __future__ import annotations

from .registry import ModelCard


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _segmentation_metrics(test: dict) -> str:
    parts = []
    for key, title in (("by_class", "class"), ("by_source", "source")):
        report = test[key]
        rows = [[group, v["n"], f"{v['dice']:.4f}", f"{v['iou']:.4f}"] for group, v in report["per_group"].items()]
        rows.append(["**all**", report["n"], f"**{report['dice']:.4f}**", f"**{report['iou']:.4f}**"])
        parts.append(f"Test split, per {title}:\n\n" + _table([title, "n", "Dice", "IoU"], rows))
    return "\n\n".join(parts)


def _classification_metrics(test: dict) -> str:
    classes = test["classes"]
    head = f"Test split: accuracy **{test['accuracy']:.4f}** on {test['n']} images, macro F1 {test['macro_f1']:.4f}"
    if "covid_vs_rest_auc" in test:
        head += f", COVID-19 vs rest AUC {test['covid_vs_rest_auc']:.4f}"
    per_class = _table(
        ["class", "precision", "recall", "F1", "support"],
        [[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]] for c, v in test["per_class"].items()],
    )
    confusion = _table(["true \\ predicted", *classes], [[c, *row] for c, row in zip(classes, test["confusion_matrix"])])
    parts = [head + ".", per_class, "Confusion matrix:\n\n" + confusion]
    if test.get("per_source"):
        parts.append("Per source:\n\n" + _table(
            ["source", "labels", "n", "accuracy"],
            [[s, ", ".join(v["labels"]), v["n"], f"{v['accuracy']:.3f}"] for s, v in test["per_source"].items()],
        ))
    return "\n\n".join(parts)


def _ct_segmentation_metrics(test: dict) -> str:
    """One Dice/IoU report (``training.metrics.segmentation_report``) or a table of mean metrics per model/subset."""
    if "per_group" in test:
        rows = [[group, v["n"], f"{v['dice']:.4f}", f"{v['iou']:.4f}"] for group, v in test["per_group"].items()]
        rows.append(["**all**", test["n"], f"**{test['dice']:.4f}**", f"**{test['iou']:.4f}**"])
        return "Test split:\n\n" + _table(["subset", "n", "Dice", "IoU"], rows)
    groups = {name: values for name, values in test.items() if isinstance(values, dict)}
    metrics = sorted({key for values in groups.values() for key in values if key != "n"})
    rows = [[name, values.get("n", ""), *(f"{values[m]:.3f}" if m in values else "" for m in metrics)]
            for name, values in groups.items()]
    return "Test split:\n\n" + _table(["", "n", *metrics], rows)


BINARY_SCORES = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def _ct_volume_metrics(metrics: dict) -> str:
    """P(COVID-19) vs CAP scores (``training.recipes.dual_sampling``): this model, the fusion, the folds."""
    rows = [[title, metrics[key]["n"], *(f"{metrics[key][s]:.3f}" for s in BINARY_SCORES)]
            for key, title in (("test", "this model, test"), ("test_dual_sampling", "dual-sampling fusion, test"),
                               ("validation", "this model, validation fold")) if key in metrics]
    folds = metrics.get("cross_validation_test")
    if folds:
        rows.append([f"this model, test, mean ± std of {folds['auc']['n']} folds", "",
                     *(f"{folds[s]['mean']:.3f} ± {folds[s]['std']:.3f}" for s in BINARY_SCORES)])
    return ("COVID-19 (positive) vs community-acquired pneumonia at P(COVID-19) >= 0.5; sensitivity on COVID-19, "
            "specificity on CAP:\n\n" + _table(["", "n", "AUC", "accuracy", "sensitivity", "specificity", "F1"], rows))


def _metrics_markdown(task: str, test: dict) -> str:
    if task == "lung-segmentation":
        return _segmentation_metrics(test)
    if task in ("ct-lung-segmentation", "ct-infection-segmentation"):
        return _ct_segmentation_metrics(test)
    return _classification_metrics(test)


CLASSIFIER_TASKS = ("cxr-classification", "ct-classification", "ct-volume-classification")


def _number(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _calibration_markdown(card: ModelCard) -> str:
    """Which probabilities the app shows (calibrated or not) and, when calibrated, ECE and reliability on test."""
    cal = card.calibration
    if not cal:
        hint = "; `python -m training calibrate` fits one" if card.task != "ct-volume-classification" else ""
        return ("**Probabilities:** uncalibrated: the app shows the network's own softmax/sigmoid outputs "
                f"(no temperature fitted{hint}).")
    head = (f"**Probabilities:** calibrated: the app and `core predict` show softmax/sigmoid(logits / T) with "
            f"temperature **T = {cal['temperature']:.3f}** fitted on {cal.get('fitted_on', 'val')} (minimum NLL).")
    if "ece_before" not in cal:
        return head
    bins = cal.get("bins", 15)
    lines = [head, f"Calibration on {cal.get('evaluated_on', 'test')}: top-label expected calibration error ({bins} bins) "
                   f"**{cal['ece_before']:.4f} before → {cal['ece_after']:.4f} after**"
                   + (f"; NLL {cal['nll_before']:.4f} → {cal['nll_after']:.4f}" if "nll_before" in cal else "") + "."]
    if cal["ece_after"] > cal["ece_before"]:
        lines[-1] += (" The temperature fitted on val did not lower the calibration error on test: the network's own "
                      "probabilities were already about as well calibrated there.")
    reliability = cal.get("reliability") or {}
    before, after = reliability.get("before") or [], reliability.get("after") or []
    if before and after:
        rows = [[f"{b['low']:.2f}–{b['high']:.2f}", b["n"], _number(b["confidence"]), _number(b["accuracy"]),
                 a["n"], _number(a["confidence"]), _number(a["accuracy"])]
                for b, a in zip(before, after) if b["n"] or a["n"]]
        lines.append("Reliability (top-label confidence bins; a calibrated model has accuracy ≈ confidence):\n\n" + _table(
            ["confidence", "n before", "confidence before", "accuracy before", "n after", "confidence after", "accuracy after"],
            rows))
    return "\n\n".join(lines)


def _faithfulness_markdown(entry: dict) -> str:
    """Per true class: mean (median) deletion score and in-lung share of the heat map on test (``core.faithfulness``)."""
    def cell(stats: dict) -> str:
        return "" if not stats.get("n") else f"{stats['mean']:.3f} ({stats['median']:.3f})"

    rows = [[name, v["n"], cell(v["deletion_score"]), cell(v["in_lung_share"])] for name, v in entry["per_class"].items()]
    every = entry["all"]
    rows.append(["**all**", every["n"], cell(every["deletion_score"]), cell(every["in_lung_share"])])
    head = (f"**Heat-map faithfulness** ({entry.get('heat_map', 'Grad-CAM')}, {entry.get('evaluated_on', 'test')}; {entry.get('refused', 0)} refused, "
            f"{entry.get('no_heat', 0)} with an all-zero map): deletion score = drop of the predicted class's probability "
            "when the 20 % hottest pixels are blurred minus the drop for 20 % random pixels (near 0: the highlighted "
            "region matters no more than any other); in-lung share = part of the heat map inside the lung mask.")
    return head + "\n\n" + _table(["true class", "n", "deletion score: mean (median)", "in-lung share: mean (median)"], rows)


def _input_shape(card: ModelCard) -> str:
    shape = card.input_config.get("shape")  # 3D networks: (z, y, x) voxels
    return " × ".join(map(str, shape)) + " voxels" if shape else f"{card.input_size}×{card.input_size}"


def card_markdown(card: ModelCard) -> str:
    serving = ""
    if card.task == "cxr-classification":
        serving = (f" · **Input kind:** `{card.input_kind}` · **Output:** {card.output}"
                   f" · **Lung model:** {card.segmenter or 'the registry default'}")
    lines = [
        f"**Task:** {card.task} · **Architecture:** `{card.architecture}` {card.architecture_config} · "
        f"**Input:** {_input_shape(card)} · **Classes:** {', '.join(card.classes)}" + serving,
        f"**Intended use:** {card.intended_use}",
        f"**Preprocessing:** {card.preprocessing}",
        f"**Training data:** {card.training_data}",
        f"**Reproduce:** `{card.training_command}`",
    ]
    if card.synthetic:
        lines.append("**Synthetic test model:** trained on generated phantoms; its outputs mean nothing clinically.")
    test = card.metrics.get("test")
    if card.task == "ct-volume-classification" and test:
        lines.append(_ct_volume_metrics(card.metrics))
    elif test:
        lines.append(_metrics_markdown(card.task, test))
    if card.task in CLASSIFIER_TASKS:
        lines.append(_calibration_markdown(card))
    if card.faithfulness:
        lines.append(_faithfulness_markdown(card.faithfulness))
    if card.limitations:
        lines.append("**Limitations:**\n" + "\n".join(f"- {item}" for item in card.limitations))
    lines.append("**Files:** " + ", ".join(f"`{f.path}` (SHA-256 `{f.sha256[:16]}…`)" for f in card.files.values()))
    return "\n\n".join(lines)
