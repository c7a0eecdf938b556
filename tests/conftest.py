"""Shared fixtures. Everything is generated: tiny random-weight models, phantoms, DICOM built in tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import models  # noqa: F401  (registers torchvision fallbacks before anything imports torchvision)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHEST_DATA", REPO.parent / "shared" / "data"))


def build_tiny_registry(folder: Path) -> Path:
    """A registry with a small segmenter and one small classifier per input kind (random weights), exported the real way."""
    import numpy as np

    from core.classes import MANET_CLASSES
    from models import create_model
    from training.export import export_model

    torch.manual_seed(0)
    common = {
        "version": "0.0.1", "preprocessing": "as bundled", "training_data": "none (random weights)",
        "training_command": "tests/conftest.py", "synthetic": True, "limitations": ["test model"],
    }
    segmenter = create_model("resunet", widths=(4, 8, 16))
    with torch.no_grad():  # bias the output towards 'lung' inside a central box so masks are not empty
        segmenter.head.bias.fill_(0.0)
    export_model(segmenter, (torch.zeros(1, 1, 64, 64),), folder, {
        **common, "name": "tiny-seg", "task": "lung-segmentation", "architecture": "resunet",
        "architecture_config": {"widths": [4, 8, 16]}, "classes": ["lung"], "input_size": 64,
    })
    classifier = create_model("resnet34", attention="mask", num_classes=5, width=8)
    export_model(classifier, (torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 64, 64)), folder, {
        **common, "name": "tiny-cls", "task": "cxr-classification", "architecture": "resnet34",
        "architecture_config": {"attention": "mask", "num_classes": 5, "width": 8},
        "classes": list(MANET_CLASSES), "input_size": 64,
    })
    export_model(classifier, (torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 64, 64)), folder, {
        **common, "name": "tiny-cls-lung-crop", "task": "cxr-classification", "architecture": "resnet34",
        "architecture_config": {"attention": "mask", "num_classes": 5, "width": 8},
        "classes": list(MANET_CLASSES), "input_size": 64, "input_config": {"lung_crop": 0.05, "equalise": True},
    })
    lung_only = create_model("cxnet_base", in_chans=1, input_size=64, num_outputs=1)
    export_model(lung_only, (torch.zeros(1, 1, 64, 64),), folder, {
        **common, "name": "tiny-lung-only", "task": "cxr-classification", "architecture": "cxnet_base",
        "architecture_config": {"in_chans": 1, "input_size": 64, "num_outputs": 1}, "classes": ["non-covid", "covid"],
        "input_size": 64, "segmenter": "tiny-seg", "input_kind": "lung-only", "input_config": {"dilation": 8, "closing": 2},
        "output": "sigmoid",
    })
    cxnet_config = {"in_chans": 3, "num_outputs": 3, "growth_rate": 4, "num_init_features": 8}
    reference = folder / "tiny-cxnet-three-reference.npy"
    np.save(reference, np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48))
    export_model(create_model("covid_cxnet", **cxnet_config), (torch.zeros(1, 3, 48, 48),), folder, {
        **common, "name": "tiny-cxnet-three", "task": "cxr-classification", "architecture": "covid_cxnet",
        "architecture_config": cxnet_config, "classes": ["normal", "pneumonia", "covid"], "input_size": 48,
        "input_kind": "cxnet-roi", "input_config": {"roi_dilation": 2, "lung_roi": True},
    }, {"histogram_reference": reference})
    return folder


def build_tiny_ct_registry(folder: Path) -> Path:
    """The CT slice models at toy size (random weights): lungs, binary + multi-class infection, the fusion classifier."""
    from core.registry import ModelCard, Registry, WeightFile, sha256_of
    from models import create_model
    from training.export import export_model

    torch.manual_seed(0)
    common = {
        "version": "0.0.1", "preprocessing": "as bundled", "training_data": "none (random weights)",
        "training_command": "tests/conftest.py", "synthetic": True, "limitations": ["test model"], "input_kind": "grey",
    }
    lungs = create_model("resunet", widths=(4, 8, 16))
    with torch.no_grad():  # lean towards 'lung' so the tiny pipeline finds lungs to measure
        lungs.head.bias.fill_(1.0)
    export_model(lungs, (torch.zeros(1, 1, 64, 64),), folder, {
        **common, "name": "tiny-ct-lungs", "task": "ct-lung-segmentation", "architecture": "resunet",
        "architecture_config": {"widths": [4, 8, 16]}, "classes": ["lung"], "input_size": 64,
    })
    export_model(create_model("infnet_slim").eval(), (torch.zeros(1, 1, 64, 64),), folder, {
        **common, "name": "tiny-ct-infection", "task": "ct-infection-segmentation", "architecture": "infnet_slim",
        "architecture_config": {}, "classes": ["infection"], "input_size": 64,
    }, any_size=True)
    multiclass_config = {"in_channels": 2, "num_classes": 3, "width": 4}
    export_model(create_model("infnet_multiclass", **multiclass_config).eval(), (torch.zeros(1, 2, 64, 64),), folder, {
        **common, "name": "tiny-ct-multiclass", "task": "ct-infection-segmentation", "architecture": "infnet_multiclass",
        "architecture_config": multiclass_config, "classes": ["background", "ggo", "consolidation"], "input_size": 64,
    })
    fusion_config = {"backbone": "resnet50", "in_channels": 1, "num_classes": 1, "width": 0.0625}
    path = folder / "tiny-ct-fusion.pt"
    torch.save(create_model("multisource_fusion", **fusion_config).state_dict(), path)
    Registry.open_or_empty(folder).write_card(ModelCard(
        **{**common, "input_kind": "multisource"}, name="tiny-ct-fusion", task="ct-classification",
        architecture="multisource_fusion", architecture_config=fusion_config, classes=["non-covid", "covid"],
        input_size=64, output="sigmoid", files={"pytorch": WeightFile(path.name, sha256_of(path))},
        input_config={"tau": 0.75, "crop_size": 32, "infection_model": "tiny-ct-infection", "lung_model": "tiny-ct-lungs"},
    ))
    return folder


@pytest.fixture(scope="session")
def tiny_ct_registry_dir(tmp_path_factory) -> Path:
    return build_tiny_ct_registry(tmp_path_factory.mktemp("ct-registry"))


@pytest.fixture(scope="session")
def tiny_registry_dir(tmp_path_factory) -> Path:
    return build_tiny_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def bundled_weights_dir() -> Path:
    folder = Path(os.environ.get("CHEST_WEIGHTS_DIR", REPO / "weights"))
    if not (folder / "manifest.json").is_file():
        pytest.skip("no bundled weights in weights/")
    return folder
