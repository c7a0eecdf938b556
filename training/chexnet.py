"""Initialise COVID-CXNet's DenseNet-121 from a CheXNet checkpoint, as the paper does (Sec. 4.3).

The checkpoint format is arnoweng/CheXNet's ``model.pth.tar``: a dict whose ``state_dict`` (or the
file itself) holds keys such as ``module.densenet121.features.denseblock1.denselayer1.norm.1.weight``.
``module.`` comes from ``nn.DataParallel``, ``densenet121.`` from CheXNet's wrapper, and the dotted
``norm.1 / relu.1 / conv.1 / norm.2 / relu.2 / conv.2`` names from torchvision's DenseNet before 0.4.
Only the features are taken; CheXNet's 14-finding ``classifier.0`` is dropped, so COVID-CXNet's head
keeps its random initialisation.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from models.cxnet import CovidCxNet

_WRAPPER_PREFIXES = ("module.", "densenet121.")
_OLD_DENSE_LAYER_NAME = re.compile(r"(\.denselayer\d+\.(?:norm|relu|conv))\.([12])\.")
# BatchNorm's update counter: absent from pre-0.4 checkpoints, unused in eval, so not required.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


def chexnet_to_densenet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a CheXNet state dict, under today's torchvision DenseNet names."""
    renamed = {}
    for key, tensor in state_dict.items():
        name = _strip_wrappers(key)
        if name.startswith("features."):
            renamed[_OLD_DENSE_LAYER_NAME.sub(r"\1\2.", name)] = tensor
    return renamed


def load_chexnet(path: str | Path, model: CovidCxNet) -> list[str]:
    """Load CheXNet's DenseNet-121 features into ``model.features``; return the head keys left at random init.

    Raises ``ValueError`` when the file is not a tensors-only checkpoint, or when its features do not
    cover the model's exactly (missing, extra or differently shaped tensors, e.g. a slim model).
    """
    features = chexnet_to_densenet(_state_dict_in(_read_tensors_only(Path(path))))
    _check_covers_features(features, model)
    result = model.load_state_dict(features, strict=False)  # non-strict for the head alone
    return sorted(key for key in result.missing_keys if not key.startswith("features."))


def _strip_wrappers(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _read_tensors_only(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # Never retry with weights_only=False: that would run whatever code the pickle names.
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, so it is not loaded "
            f"(unpickling it could run arbitrary code). Re-save just its state_dict from a trusted "
            f"environment. torch said: {error}"
        ) from error


def _state_dict_in(checkpoint: dict) -> dict[str, torch.Tensor]:
    if not isinstance(checkpoint, dict):
        raise ValueError(f"expected a dict checkpoint, got {type(checkpoint).__name__}")
    return checkpoint.get("state_dict", checkpoint)


def _check_covers_features(features: dict[str, torch.Tensor], model: CovidCxNet) -> None:
    expected = {f"features.{key}": tensor for key, tensor in model.features.state_dict().items()}
    missing = sorted(key for key in expected.keys() - features.keys() if not key.endswith(_OPTIONAL_SUFFIX))
    extra = sorted(features.keys() - expected.keys())
    mismatched = sorted(
        f"{key} {tuple(features[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in features.keys() & expected.keys()
        if features[key].shape != expected[key].shape
    )
    problems = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (("missing", missing), ("unexpected", extra), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        raise ValueError("CheXNet checkpoint does not match the model's DenseNet features; " + "; ".join(problems))
