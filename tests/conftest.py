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


@pytest.fixture(scope="session")
def tiny_registry_dir(tmp_path_factory) -> Path:
    return build_tiny_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def bundled_weights_dir() -> Path:
    folder = Path(os.environ.get("CHEST_WEIGHTS_DIR", REPO / "weights"))
    if not (folder / "manifest.json").is_file():
        pytest.skip("no bundled weights in weights/")
    return folder
