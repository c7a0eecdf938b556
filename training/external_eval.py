"""External validation: score a registry classifier through the app's pipeline on anyone's labelled folder.

``python -m training external-eval --weights W --classifier NAME --data DIR [--out per_image.csv]``

``DIR/labels.csv`` has the columns ``image,label[,source]`` (``image`` relative to ``DIR`` or absolute).
Each image goes exactly the way ``python -m core predict`` sends it (``core.batch.predict_rows``: decode,
de-identify, metadata and pixel guards, the image-kind gate, lung model, classifier), so a hospital
checks the model it would serve, on its own images, before trusting it. Labels are folded into the
classifier's classes by the task of its card (``training.tasks``, as ``served-accuracy`` does: e.g.
bacterial and viral count as "pneumonia" for COVID-CXNet's three classes); a label the task has no
class for is an error that names it (``skip_unknown`` leaves those images out, reported).

Printed: accuracy on the analysed images and counting refusals as wrong; one-vs-rest AUC per class
(and COVID-19 vs rest where the classifier has that class); per-class recall; calibration as the
top-label expected calibration error over 15 equal-width confidence bins with its reliability table;
per-source accuracy when ``source`` is given. Images the app refuses are counted and listed, never
silently dropped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from core.calibration import ECE_BINS, probability_note, reliability
from core.errors import ChestReviewError
from training.metrics import classification_report


class ExternalEvalError(ChestReviewError):
    """The folder or its labels.csv cannot be scored (missing, malformed, or labels the classifier cannot score)."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str  # as written in labels.csv (lower-cased, stripped)
    source: str | None


@dataclass
class ExternalEval:
    classifier: str
    version: str
    classes: list[str]
    rows: list[dict]  # one per scored image: image, label, target, source, status, predicted_label, prob_*, message
    report: dict  # training.metrics.classification_report on the analysed images (+ auc_per_class, ece, reliability)
    n_images: int
    refused: int
    accuracy_with_refusals: float  # refused images counted as wrong
    skipped_labels: dict[str, int] = field(default_factory=dict)  # labels left out (skip_unknown)
    probability_note: str = ""  # calibrated (temperature T fitted on val) or uncalibrated, as the app shows them


def read_labels(folder: Path) -> list[LabelledImage]:
    """``folder/labels.csv`` (``image,label[,source]``) as labelled images; a clear error when it is unusable."""
    path = Path(folder) / "labels.csv"
    if not path.is_file():
        raise ExternalEvalError(f"No labels.csv in {folder}: give a folder holding labels.csv with the columns image,label[,source].")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower() for name in reader.fieldnames or []}
        if not {"image", "label"} <= columns:
            raise ExternalEvalError(f"{path} needs the columns image and label (and optionally source); it has "
                                    f"{', '.join(sorted(columns)) or 'none'}.")
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise ExternalEvalError(f"{path} lists no images.")
    images = []
    for number, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise ExternalEvalError(f"{path}, line {number}: every row needs an image and a label.")
        image = Path(row["image"])
        images.append(LabelledImage(image if image.is_absolute() else Path(folder) / image, row["label"].lower(),
                                    row.get("source") or None))
    return images


def auc_per_class(targets: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """One-vs-rest ROC AUC of each class (None where the class or its complement is absent)."""
    out = {}
    for index, name in enumerate(classes):
        positive = (targets == index).astype(int)
        out[name] = float(roc_auc_score(positive, probs[:, index])) if 0 < positive.sum() < len(positive) else None
    return out


def external_eval(weights: Path, classifier: str | None, data: Path, skip_unknown: bool = False,
                  backend: str = "auto", progress: bool = True) -> ExternalEval:
    """Score ``classifier`` of the registry ``weights`` on ``data/labels.csv`` through ``core.batch.predict_rows``."""
    from core.batch import predict_rows
    from core.guard.image_kind import open_gate
    from core.pipelines.cxr import CxrPipeline
    from core.registry import Registry
    from training.served import task_for

    images = read_labels(Path(data))
    registry = Registry.open(weights)
    pipeline = CxrPipeline(registry, backend=backend, classifier=classifier)
    classes, card = list(pipeline.classes), pipeline.cls_card
    try:
        mapping = task_for(classes).mapping
    except ValueError:  # a card with classes no training task folds into: its own class names only
        mapping = {name: name for name in classes}
    unknown: dict[str, int] = {}
    for image in images:
        if image.label not in mapping:
            unknown[image.label] = unknown.get(image.label, 0) + 1
    if unknown and not skip_unknown:
        listed = ", ".join(f"'{label}' ({count} images)" for label, count in sorted(unknown.items()))
        raise ExternalEvalError(
            f"{card.name} cannot score the labels {listed}: its classes are {', '.join(classes)} and the labels it "
            f"maps to them are {', '.join(sorted(mapping))}. Relabel those images, or pass --skip-unknown-labels "
            "to leave them out.")
    images = [image for image in images if image.label in mapping]
    if not images:
        raise ExternalEvalError(f"No image in {data} has a label {card.name} can score.")

    rows = []
    for image, row in zip(images, predict_rows("cxr", pipeline, [image.path for image in images], open_gate(registry),
                                               progress=progress)):
        rows.append({"image": str(image.path), "label": image.label, "target": mapping[image.label],
                     "source": image.source or "", **{k: v for k, v in row.items() if k != "file"}})
    analysed = [row for row in rows if row["status"] == "ok"]
    targets = np.array([classes.index(row["target"]) for row in analysed], dtype=np.int64)
    probs = np.array([[float(row[f"prob_{c}"]) for c in classes] for row in analysed], dtype=np.float64).reshape(-1, len(classes))
    has_sources = any(image.source for image in images)
    report: dict = {"n": 0}
    if analysed:
        report = classification_report(targets, probs, classes,
                                       sources=[row["source"] or "(none)" for row in analysed] if has_sources else None)
        report["auc_per_class"] = auc_per_class(targets, probs, classes)
        report["ece"], report["reliability"] = reliability(probs.max(1), probs.argmax(1) == targets)
    for row in rows:
        row["correct"] = int(row["status"] == "ok" and row["predicted_label"] == row["target"])
    return ExternalEval(card.name, card.version, classes, rows, report, len(rows), len(rows) - len(analysed),
                        float(np.mean([row["correct"] for row in rows])), skipped_labels=unknown,
                        probability_note=probability_note(card))


def per_image_columns(classes: list[str]) -> list[str]:
    return ["image", "label", "target", "source", "status", "predicted_label", "correct",
            *[f"prob_{c}" for c in classes], "lung_area_fraction", "model", "model_version", "seconds", "message"]


def write_per_image(result: ExternalEval, out: Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=per_image_columns(result.classes), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_report(result: ExternalEval) -> str:
    """The printed summary: accuracy, AUC, recall, calibration, per source, refusals."""
    report = result.report
    header = (f"{result.classifier} {result.version} on {result.n_images} images "
              f"({result.n_images - result.refused} analysed, {result.refused} refused by the app)")
    lines = [header]
    if result.skipped_labels:
        lines.append("left out (labels the classifier has no class for): "
                     + ", ".join(f"{label} {count}" for label, count in sorted(result.skipped_labels.items())))
    lines.append(f"accuracy {_number(report.get('accuracy'))} on the analysed images; "
                 f"{result.accuracy_with_refusals:.4f} counting refusals as wrong")
    if report.get("n"):
        lines.append(f"macro F1 {report['macro_f1']:.4f}")
        if "covid_vs_rest_auc" in report:
            lines.append(f"COVID-19 vs rest AUC {report['covid_vs_rest_auc']:.4f}")
        lines.append("")
        lines.append(f"{'class':<12} {'n':>5} {'recall':>7} {'precision':>9} {'AUC (one vs rest)':>18}")
        for name in result.classes:
            cls = report["per_class"][name]
            lines.append(f"{name:<12} {cls['support']:>5} {cls['recall']:>7.4f} {cls['precision']:>9.4f} "
                         f"{_number(report['auc_per_class'][name]):>18}")
        lines.append("")
        lines.append(f"calibration: expected calibration error (top label, {ECE_BINS} bins) {report['ece']:.4f}"
                     + (f" of the probabilities as the app shows them: {result.probability_note}" if result.probability_note else ""))
        lines.append(f"{'confidence':<12} {'n':>5} {'mean conf.':>10} {'accuracy':>9}")
        for row in report["reliability"]:
            if row["n"]:
                lines.append(f"{row['low']:.3f}-{row['high']:.3f} {row['n']:>5} {row['confidence']:>10.4f} {row['accuracy']:>9.4f}")
        if "per_source" in report:
            lines.append("")
            lines.append(f"{'source':<24} {'n':>5} {'accuracy':>9}  predicted as")
            for source, entry in report["per_source"].items():
                called = ", ".join(f"{k} {v}" for k, v in entry["predicted"].items() if v)
                lines.append(f"{source:<24} {entry['n']:>5} {entry['accuracy']:>9.4f}  {called}")
    refused = [row for row in result.rows if row["status"] != "ok"]
    if refused:
        lines.append("")
        lines.append(f"refused by the app ({len(refused)}):")
        lines += [f"  {Path(row['image']).name}: {row['message']}" for row in refused[:20]]
        if len(refused) > 20:
            lines.append(f"  ... and {len(refused) - 20} more (see --out)")
    return "\n".join(lines)
