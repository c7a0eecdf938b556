"""A registry for the CT volume page's tests: the bundled CT models, with both 3D classifiers.

When the bundled registry has paper 004's two classifiers (task ``ct-volume-classification``,
``input_config["sampling"]`` "uniform" and "size-balanced") it is used as it is. Otherwise the
bundled CT lung and infection models are copied into a new folder (the registry refuses weight
files outside its folder, links included) beside two toy 3D classifiers with random weights, so
the page's classification panel and review form run through the real pipeline either way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from core.registry import ModelCard, Registry, WeightFile, sha256_of

SEGMENTATION_TASKS = ("ct-lung-segmentation", "ct-infection-segmentation")
TOY_CONFIG = {"num_classes": 1, "width": 4}
TOY_INPUT = {"shape": [16, 32, 32], "factor": 12.0}  # 15 x 8.6 x 8.6 mm voxels: a whole chest in a tiny grid


def has_both_classifiers(registry: Registry) -> bool:
    samplings = {card.input_config.get("sampling") for card in registry.cards("ct-volume-classification")}
    return {"uniform", "size-balanced"} <= samplings


def ct_volume_registry(bundled: Path, folder: Path) -> Path:
    """``bundled`` when it has both 3D classifiers, else ``folder`` filled as the module says."""
    registry = Registry.open(bundled)
    if has_both_classifiers(registry):
        return bundled
    import torch

    from models import create_model

    target = Registry.open_or_empty(folder)
    for task in SEGMENTATION_TASKS:
        for card in registry.cards(task):
            for entry in card.files.values():
                shutil.copyfile(bundled / entry.path, folder / entry.path)
            target.write_card(card)
    torch.manual_seed(0)
    for sampling in ("uniform", "size-balanced"):
        name = f"toy-dual-sampling-{sampling}"
        path = folder / f"{name}.pt"
        torch.save(create_model("resnet3d34_attention", **TOY_CONFIG).eval().state_dict(), path)
        target.write_card(ModelCard(
            name=name, version="0.0.1", task="ct-volume-classification", architecture="resnet3d34_attention",
            architecture_config=dict(TOY_CONFIG), classes=["cap", "covid"], input_size=TOY_INPUT["shape"][-1],
            preprocessing="core.imaging.volume_input.classifier_input", training_data="none (random weights)",
            training_command="tests/ct_volume_registry.py", synthetic=True, limitations=["test model"],
            files={"pytorch": WeightFile(path.name, sha256_of(path))}, input_kind="volume", output="sigmoid",
            input_config={**TOY_INPUT, "sampling": sampling},
        ))
    return folder
