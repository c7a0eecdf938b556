"""Which pack labels each recipe trains on, and under which class.

The pack keeps fine labels (bacterial, viral, community-acquired pneumonia, ...) so that one set of
records serves every paper's class scheme; a ``Task`` folds them into the classes a model predicts
and drops the labels that scheme has no class for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.classes import MANET_CLASSES
from training.data import CxrRecord

PACK_LABELS = ("normal", "covid", "tb", "bacterial", "viral", "pneumonia", "fungal", "other")
COMMUNITY_PNEUMONIA = ("bacterial", "viral", "pneumonia")


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[str, ...]
    mapping: dict[str, str]  # pack label -> class; labels not in it are left out of the task


def _identity(classes: tuple[str, ...]) -> dict[str, str]:
    return {label: label for label in classes}


MANET = Task("manet", MANET_CLASSES, _identity(MANET_CLASSES))
BINARY_COVID = Task(
    "binary-covid", ("non-covid", "covid"),
    {label: "covid" if label == "covid" else "non-covid" for label in PACK_LABELS},
)
CXNET_BINARY = Task("cxnet-binary", ("normal", "covid"), _identity(("normal", "covid")))
CXNET_THREE = Task(
    "cxnet-three", ("normal", "pneumonia", "covid"),
    {**_identity(("normal", "covid")), **dict.fromkeys(COMMUNITY_PNEUMONIA, "pneumonia")},
)
# COVID-CXNet's hierarchy: level 1 separates any pneumonia (COVID included) from normal,
# level 2 tells COVID from community-acquired pneumonia.
CXNET_PNEUMONIA = Task(
    "cxnet-pneumonia", ("normal", "pneumonia"),
    {"normal": "normal", **dict.fromkeys((*COMMUNITY_PNEUMONIA, "covid"), "pneumonia")},
)
CXNET_CAP_VS_COVID = Task(
    "cxnet-cap-vs-covid", ("pneumonia", "covid"),
    {"covid": "covid", **dict.fromkeys(COMMUNITY_PNEUMONIA, "pneumonia")},
)

TASKS = {task.name: task for task in (MANET, BINARY_COVID, CXNET_BINARY, CXNET_THREE, CXNET_PNEUMONIA, CXNET_CAP_VS_COVID)}


def select(records: list[CxrRecord], task: Task) -> tuple[list[CxrRecord], np.ndarray]:
    """The records the task has a class for, and their class indices into ``task.classes``."""
    kept = [record for record in records if record.label in task.mapping]
    targets = np.array([task.classes.index(task.mapping[record.label]) for record in kept], dtype=np.int64)
    return kept, targets
