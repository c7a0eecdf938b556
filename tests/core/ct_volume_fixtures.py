"""Registries and volumes for the CT volume pipeline and CLI tests.

The slice models are the bundled CT lung and infection models (they segment the synthetic volumes
of ``core.ct_volume_phantoms``; random toy models would find no lungs to measure). The 3D
classifiers are toy ``resnet3d34_attention`` networks with random weights, one per sampling, until
tests need nothing more than the contract.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from core.registry import MANIFEST, ModelCard, Registry, WeightFile, sha256_of

SEGMENTATION_TASKS = ("ct-lung-segmentation", "ct-infection-segmentation")
TOY_CLASSIFIER_CONFIG = {"width": 4}
TOY_INPUT = {"shape": [24, 48, 48], "factor": 4.0}
PHANTOM_SHAPE = (40, 112, 112)  # z, y, x: small enough for a test, a chest's extent at this spacing
PHANTOM_SPACING_MM = (6.0, 3.1, 3.1)


def segmentation_registry(bundled: Path, folder: Path) -> Path:
    """A registry holding copies of the bundled CT lung and infection models only (no classifier)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((bundled / MANIFEST).read_text())
    registry = Registry(folder, [])
    for entry in manifest["models"]:
        if entry["task"] in SEGMENTATION_TASKS:
            for weight in entry["files"].values():
                shutil.copy2(bundled / weight["path"], folder / weight["path"])
            registry.write_card(ModelCard.from_dict(entry))
    return folder


def add_toy_classifiers(folder: Path, samplings=("uniform", "size-balanced")) -> Path:
    """Random-weight 3D classifiers (task ct-volume-classification), one card per sampling."""
    from models import create_model

    registry = Registry.open_or_empty(folder)
    for seed, sampling in enumerate(samplings):
        torch.manual_seed(seed)
        name = f"toy-3d-{sampling}"
        path = folder / f"{name}.pt"
        torch.save(create_model("resnet3d34_attention", **TOY_CLASSIFIER_CONFIG).state_dict(), path)
        registry.write_card(ModelCard(
            name=name, version="0.0.1", task="ct-volume-classification", architecture="resnet3d34_attention",
            architecture_config=dict(TOY_CLASSIFIER_CONFIG), classes=["cap", "covid"], input_size=48,
            preprocessing="lung-masked volume, paper 004", files={"pytorch": WeightFile(path.name, sha256_of(path))},
            training_data="none (random weights)", training_command="tests/core/ct_volume_fixtures.py", synthetic=True,
            input_kind="volume", input_config={**TOY_INPUT, "sampling": sampling}, output="sigmoid",
        ))
    return folder


def phantom(label: str = "covid", seed: int = 3, infection_ratio: float | None = 0.04):
    """A small synthetic chest volume whose HU fit 12-bit DICOM (so NIfTI and DICOM hold the same values)."""
    from core.ct_volume_phantoms import make_ct_volume

    case = make_ct_volume(label, seed=seed, shape=PHANTOM_SHAPE, spacing_mm=PHANTOM_SPACING_MM,
                          infection_ratio=infection_ratio)
    case.hu = np.clip(np.rint(case.hu), -1024, 3071).astype(np.float32)
    return case


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0
