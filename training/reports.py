"""Run reports: a ``report.md`` with the paper's tables in the paper's shape, figures, and JSON.

Each recipe builds a ``Report`` section by section; figures are PNG files beside ``report.md``.
Matplotlib runs headless (Agg), so reports are written on servers and in CI alike.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def write_json(path: Path, payload) -> None:
    """Rank 0 only: under torchrun every process computes the same results, one of them writes them."""
    from training.engine import is_main_process

    if not is_main_process():
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def fmt(value, digits: int = 4) -> str:
    """Floats rounded to ``digits`` without padding zeros (a paper's 89.07 stays 89.07)."""
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def spread(stats: dict, scale: float = 100.0) -> str:
    """``mean ± std (min-max)`` of ``training.metrics.mean_and_spread`` output, in percent by default."""
    return (f"{scale * stats['mean']:.2f} ± {scale * stats['std']:.2f} "
            f"({scale * stats['min']:.2f}-{scale * stats['max']:.2f})")


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    def __init__(self, folder: Path, title: str, intro: str = ""):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.parts = [f"# {title}", intro] if intro else [f"# {title}"]

    def text(self, heading: str, body: str) -> None:
        self.parts += [f"## {heading}", body]

    def table(self, heading: str, headers: list[str], rows: list[list], note: str = "") -> None:
        self.parts += [f"## {heading}", markdown_table(headers, rows)] + ([note] if note else [])

    def figure(self, heading: str, filename: str) -> None:
        self.parts += [f"## {heading}", f"![{heading}]({filename})"]

    def write(self) -> Path:
        path = self.folder / "report.md"
        path.write_text("\n\n".join(part for part in self.parts if part) + "\n")
        return path


# ---------------------------------------------------------------- standard tables
def per_class_rows(report: dict) -> list[list]:
    return [[name, percent(v["precision"]), percent(v["recall"]), percent(v["f1"]), v["support"]]
            for name, v in report["per_class"].items()]


def confusion_rows(report: dict) -> list[list]:
    return [[name] + row for name, row in zip(report["classes"], report["confusion_matrix"])]


def per_source_rows(report: dict) -> list[list]:
    return [
        [source, v["n"], ", ".join(v["labels"]), percent(v["accuracy"]),
         ", ".join(f"{k} {n}" for k, n in v["predicted"].items() if n)]
        for source, v in report.get("per_source", {}).items()
    ]


PER_CLASS_HEADERS = ["class", "precision %", "recall %", "F1 %", "support"]
PER_SOURCE_HEADERS = ["source", "n", "true labels", "accuracy %", "predicted as"]


def add_classification_tables(report: Report, name: str, result: dict) -> None:
    """Per-class P/R/F1, confusion matrix (rows true, columns predicted) and the per-source audit."""
    report.table(f"{name}: precision, recall and F1 per class", PER_CLASS_HEADERS, per_class_rows(result))
    report.table(f"{name}: confusion matrix (rows true, columns predicted)",
                 ["true \\ predicted"] + result["classes"], confusion_rows(result))
    if result.get("per_source"):
        report.table(f"{name}: per source (shortcut audit)", PER_SOURCE_HEADERS, per_source_rows(result))


# ---------------------------------------------------------------- figures
def plot_confusion(matrix, classes, path: Path, title: str = "") -> None:
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)


def plot_roc(y_true, probs, classes, path: Path, title: str = "") -> None:
    """One-vs-rest ROC per class (the positive class only for binary tasks)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    fig, ax = plt.subplots(figsize=(5, 5))
    for index in range(len(classes)) if len(classes) > 2 else [1]:
        positives = y_true == index
        if 0 < positives.sum() < len(y_true):
            fpr, tpr, _ = roc_curve(positives, probs[:, index])
            ax.plot(fpr, tpr, label=classes[index])
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    _save(fig, path)


def _mean_speed(logged: list[dict]) -> float | None:
    speeds = [float(r["train_images_per_s"]) for r in logged if r.get("train_images_per_s")]
    return sum(speeds) / len(speeds) if speeds else None


def logged_speed(log: Path) -> float | None:
    """Mean training images/s over the epochs of a ``log.csv`` (a resumed run keeps the epochs it ran before)."""
    if not Path(log).is_file():
        return None
    with open(log, newline="") as handle:
        return _mean_speed(list(csv.DictReader(handle)))


def add_speed_table(report: Report, logs: dict[str, Path]) -> None:
    """Training images/s (mean over epochs, from each ``log.csv``) and wall time, with the threads torch used."""
    import torch

    rows = []
    for label, log in logs.items():
        if not Path(log).is_file():
            continue
        with open(log, newline="") as handle:
            logged = list(csv.DictReader(handle))
        speed = _mean_speed(logged)
        rows.append([label, len(logged), f"{sum(float(r['seconds']) for r in logged) / 60:.1f}",
                     f"{speed:.1f}" if speed else "-"])
    if rows:
        report.table(f"Training speed ({torch.get_num_threads()} CPU thread(s) or the device in config.json)",
                     ["model", "epochs", "minutes (train + val)", "training images/s"], rows)


def plot_training_curves(logs: dict[str, Path], path: Path) -> None:
    """Training loss and the selection metric per epoch for every ``log.csv`` given (label -> path)."""
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for label, log in logs.items():
        if not Path(log).is_file():
            continue
        rows = list(csv.DictReader(open(log)))
        epochs = [int(r["epoch"]) for r in rows]
        loss_ax.plot(epochs, [float(r["train_loss"]) for r in rows], label=label)
        metric = next(k for k in rows[0] if k.startswith("val_"))
        val_ax.plot(epochs, [float(r[metric]) for r in rows], label=f"{label} ({metric})")
    loss_ax.set_title("training loss")
    val_ax.set_title("validation")
    for ax in (loss_ax, val_ax):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_heatmap_grid(panels: list[tuple[np.ndarray, np.ndarray, str]], path: Path, columns: int = 4) -> None:
    """Grad-CAM grid: each panel is (greyscale image in [0, 1], heat map in [0, 1], caption)."""
    rows = max(1, int(np.ceil(len(panels) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, heat, caption) in zip(axes.flat, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=8)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
