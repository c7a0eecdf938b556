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


def _metrics_markdown(task: str, test: dict) -> str:
    if task == "lung-segmentation":
        return _segmentation_metrics(test)
    if task in ("ct-lung-segmentation", "ct-infection-segmentation"):
        return _ct_segmentation_metrics(test)
    return _classification_metrics(test)


def card_markdown(card: ModelCard) -> str:
    serving = ""
    if card.task == "cxr-classification":
        serving = (f" · **Input kind:** `{card.input_kind}` · **Output:** {card.output}"
                   f" · **Lung model:** {card.segmenter or 'the registry default'}")
    lines = [
        f"**Task:** {card.task} · **Architecture:** `{card.architecture}` {card.architecture_config} · "
        f"**Input:** {card.input_size}×{card.input_size} · **Classes:** {', '.join(card.classes)}" + serving,
        f"**Intended use:** {card.intended_use}",
        f"**Preprocessing:** {card.preprocessing}",
        f"**Training data:** {card.training_data}",
        f"**Reproduce:** `{card.training_command}`",
    ]
    if card.synthetic:
        lines.append("**Synthetic test model:** trained on generated phantoms; its outputs mean nothing clinically.")
    test = card.metrics.get("test")
    if test:
        lines.append(_metrics_markdown(card.task, test))
    if card.limitations:
        lines.append("**Limitations:**\n" + "\n".join(f"- {item}" for item in card.limitations))
    lines.append("**Files:** " + ", ".join(f"`{f.path}` (SHA-256 `{f.sha256[:16]}…`)" for f in card.files.values()))
    return "\n\n".join(lines)
