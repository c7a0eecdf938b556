"""Score a registry classifier through the app's own pipeline on a data split.

``python -m training served-accuracy --weights weights --classifier covid-cxnet-binary`` checks that
serving (decode -> lung model -> input building -> ONNX Runtime) reproduces the recipe's test figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import ChestReviewError
from core.pipelines.cxr import CxrPipeline
from core.progress import progress_bar
from core.registry import Registry
from core.study import Study
from training.data import load_gray
from training.tasks import TASKS, select


def task_for(classes: list[str]):
    """The task whose classes are the card's, in the same order."""
    for task in TASKS.values():
        if list(task.classes) == list(classes):
            return task
    raise ValueError(f"no training task has the classes {classes}")


def served_accuracy(weights: Path, classifier: str | None, records, split: str = "test") -> dict:
    pipeline = CxrPipeline(Registry.open(weights), backend="auto", classifier=classifier)
    chosen, labels = select([r for r in records if r.split == split], task_for(pipeline.classes))
    predicted, refused = [], 0
    for record in progress_bar(chosen, desc=f"serving {pipeline.cls_card.name}", leave=False):
        try:
            result = pipeline.analyse(Study(load_gray(record.image), "png"), explain=False)
        except ChestReviewError:  # no lungs found: a wrong answer, counted
            predicted.append(-1)
            refused += 1
            continue
        predicted.append(pipeline.classes.index(result.predicted_label))
    return {"classifier": pipeline.cls_card.name, "n": len(chosen), "refused": refused,
            "served_accuracy": float(np.mean(np.array(predicted) == labels)) if chosen else float("nan"),
            "card_accuracy": pipeline.cls_card.metrics.get("test", {}).get("accuracy")}
