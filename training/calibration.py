"""Fit a served classifier's temperature on val, score it on test, write it on the model card.

``python -m training calibrate --weights W --classifier NAME [--data DIR]``

Every image goes the way the app and ``python -m core predict`` send it (``core.batch.predict_rows``:
decode, de-identify, guards, the image-kind gate, lung model, classifier); the classifier's raw logits
(before any temperature already on the card, so a rerun fits afresh) are collected on the pack's
``val`` split, the temperature T minimising their negative log-likelihood is fitted there
(``core.calibration.fit_temperature``), and the top-label expected calibration error over 15 bins, its
reliability table and the NLL are reported on the ``test`` split before (T = 1) and after. The card's
``calibration`` entry in ``W/manifest.json`` then holds all of it, and the pipelines serve
softmax/sigmoid(logits / T). Images the app refuses show no probability and are left out (counted).

Served classifiers: chest X-ray (``cxr-classification``: the pack's ``cxr`` collection, labels folded into
the card's classes as its recipe folds them, ``training.tasks``) and CT slice (``ct-classification``:
``ct_slices`` with the splits every CT recipe uses, ``training.ct_data``). The CT volume classifiers'
card field is the same; their pipeline and data are not handled here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.calibration import ECE_BINS, fit_temperature, negative_log_likelihood, probabilities, top_label_reliability
from core.errors import ChestReviewError

SERVED_TASKS = ("cxr-classification", "ct-classification")
CT_SLICE_LABELS = {"covid": "covid", "noncovid": "non-covid", "non-covid": "non-covid"}


class CalibrationError(ChestReviewError):
    """The classifier cannot be calibrated here (unknown task, no usable images in a split)."""


@dataclass
class ServedSplit:
    """One split as the app served it: raw logits (N, K or 1) and class indices of the analysed images."""

    name: str
    logits: np.ndarray
    targets: np.ndarray
    refused: int

    @property
    def n(self) -> int:
        return len(self.targets)


def _served_split(name: str, task: str, pipeline, files: list[Path], targets: np.ndarray, gate,
                  progress: bool) -> ServedSplit:
    from core.batch import predict_rows

    logits, kept = [], []
    for target, row in zip(targets, predict_rows(task, pipeline, files, gate, progress=progress)):
        if row["status"] == "ok" and row.get("logits") is not None:
            logits.append(row["logits"])
            kept.append(int(target))
    if not kept:
        raise CalibrationError(f"The app analysed none of the {len(files)} {name} images: nothing to calibrate on.")
    return ServedSplit(name, np.asarray(logits, dtype=np.float64), np.asarray(kept, dtype=np.int64), len(files) - len(kept))


def _rounded_table(table: list[dict]) -> list[dict]:
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in table]


def calibration_entry(val: ServedSplit, test: ServedSplit, output: str, command: str = "") -> dict:
    """The card's ``calibration`` entry: T fitted on ``val``; ECE, reliability and NLL on ``test`` before and after."""
    temperature = fit_temperature(val.logits, val.targets, output)
    before, after = probabilities(test.logits, output), probabilities(test.logits, output, temperature)
    ece_before, table_before = top_label_reliability(before, test.targets)
    ece_after, table_after = top_label_reliability(after, test.targets)
    return {
        "method": "temperature scaling: softmax/sigmoid(logits / T), T minimising the NLL on val",
        "temperature": round(temperature, 6),
        "fitted_on": f"val, {val.n} images",
        "evaluated_on": f"test, {test.n} images",
        "refused": {"val": val.refused, "test": test.refused},
        "bins": ECE_BINS,
        "ece_before": round(ece_before, 6), "ece_after": round(ece_after, 6),
        "nll_before": round(negative_log_likelihood(test.logits, test.targets, output), 6),
        "nll_after": round(negative_log_likelihood(test.logits, test.targets, output, temperature), 6),
        "val_nll_before": round(negative_log_likelihood(val.logits, val.targets, output), 6),
        "val_nll_after": round(negative_log_likelihood(val.logits, val.targets, output, temperature), 6),
        "test_accuracy": round(float((after.argmax(1) == test.targets).mean()), 6),
        "reliability": {"before": _rounded_table(table_before), "after": _rounded_table(table_after)},
        "command": command,
    }


def _cxr_splits(registry, card, data: Path | None, progress: bool) -> tuple[ServedSplit, ServedSplit]:
    from core.guard.image_kind import open_gate
    from core.pipelines.cxr import CxrPipeline
    from training.__main__ import load_records
    from training.served import task_for
    from training.tasks import select

    pipeline = CxrPipeline(registry, classifier=card.name)
    task = task_for(pipeline.classes)
    records = load_records([str(data)] if data else None)
    gate = open_gate(registry)
    splits = []
    for split in ("val", "test"):
        chosen, targets = select([r for r in records if r.split == split], task)
        if not chosen:
            raise CalibrationError(f"The data pack has no {split} images for {card.name}'s classes.")
        splits.append(_served_split(split, "cxr", pipeline, [r.image for r in chosen], targets, gate, progress))
    return splits[0], splits[1]


def _ct_slice_splits(registry, card, data: Path | None, progress: bool) -> tuple[ServedSplit, ServedSplit]:
    from core.guard.image_kind import open_gate
    from core.pipelines.ct_slice import CtSlicePipeline
    from training.ct_data import read_ct_slice_records
    from training.data import resolve_data_root

    pipeline = CtSlicePipeline(registry)
    served = pipeline.cards.get("classifier")
    if served is None or served.name != card.name:
        raise CalibrationError(f"The CT slice page serves {served.name if served else 'no classifier'}, not {card.name}: "
                               "only the served CT classifier can be calibrated through its pipeline.")
    records = read_ct_slice_records(resolve_data_root(data, ("ct_slices",)))
    gate = open_gate(registry)
    splits = []
    for split in ("val", "test"):
        chosen = [r for r in records if r.split == split and r.label in CT_SLICE_LABELS]
        if not chosen:
            raise CalibrationError(f"The data pack has no {split} CT slices.")
        targets = np.array([card.classes.index(CT_SLICE_LABELS[r.label]) for r in chosen], dtype=np.int64)
        splits.append(_served_split(split, "ct-slice", pipeline, [r.image for r in chosen], targets, gate, progress))
    return splits[0], splits[1]


def calibrate(weights: Path, classifier: str, data: Path | None = None, progress: bool = True,
              write: bool = True) -> dict:
    """Fit ``classifier``'s temperature through the app's pipeline and (``write``) store it on its card."""
    from core.registry import Registry

    registry = Registry.open(Path(weights))
    card = registry.card(classifier)
    if card.task not in SERVED_TASKS:
        raise CalibrationError(f"{card.name} is a {card.task} model; calibrate handles {', '.join(SERVED_TASKS)}.")
    splits = _cxr_splits if card.task == "cxr-classification" else _ct_slice_splits
    val, test = splits(registry, card, Path(data) if data else None, progress)
    output = "sigmoid" if card.task == "ct-classification" else card.output  # the fusion head: one logit
    command = f"python -m training calibrate --weights {weights} --classifier {card.name}" + (f" --data {data}" if data else "")
    entry = calibration_entry(val, test, output, command)
    if write:
        registry.write_card(replace(card, calibration=entry))
    return entry


def format_calibration(name: str, entry: dict) -> str:
    """The printed summary: T, ECE and NLL on test before and after, the reliability table."""
    lines = [
        (f"{name}: temperature {entry['temperature']:.4f} fitted on {entry['fitted_on']} "
         f"({entry['refused']['val']} refused); scored on {entry['evaluated_on']} ({entry['refused']['test']} refused)"),
        f"test ECE (top label, {entry['bins']} bins): {entry['ece_before']:.4f} before -> {entry['ece_after']:.4f} after",
        (f"test NLL: {entry['nll_before']:.4f} -> {entry['nll_after']:.4f}; val NLL: {entry['val_nll_before']:.4f} -> "
         f"{entry['val_nll_after']:.4f}; test accuracy {entry['test_accuracy']:.4f} (unchanged by T)"),
        f"{'confidence':<12} {'n':>5} {'conf. before':>12} {'acc. before':>11} {'n after':>8} {'conf. after':>11} {'acc. after':>10}",
    ]
    for b, a in zip(entry["reliability"]["before"], entry["reliability"]["after"]):
        if b["n"] or a["n"]:
            def cell(value, width):
                return f"{value:>{width}.4f}" if value is not None else f"{'-':>{width}}"
            lines.append(f"{b['low']:.3f}-{b['high']:.3f} {b['n']:>5} {cell(b['confidence'], 12)} {cell(b['accuracy'], 11)} "
                         f"{a['n']:>8} {cell(a['confidence'], 11)} {cell(a['accuracy'], 10)}")
    return "\n".join(lines)
