"""Loading CheXNet-format checkpoints (arnoweng/CheXNet ``model.pth.tar``) into COVID-CXNet's features.

The checkpoint is built from a slim model's own features, renamed the way CheXNet stored them:
``nn.DataParallel``'s ``module.``, CheXNet's ``densenet121.`` wrapper, pre-0.4 torchvision names
(``norm.1`` for ``norm1``), no ``num_batches_tracked``, and a 14-finding ``classifier.0``.
"""

from __future__ import annotations

import pytest
import torch

from models.cxnet import CovidCxNet
from training.chexnet import chexnet_to_densenet, load_chexnet

SLIM = dict(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16)
OLD_NAMES = {f".{part}{i}.": f".{part}.{i}." for part in ("norm", "relu", "conv") for i in (1, 2)}


class NotATensor:
    """Anything a ``weights_only`` load must refuse."""


@pytest.fixture(autouse=True)
def _small_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def slim_model(seed: int) -> CovidCxNet:
    torch.manual_seed(seed)
    model = CovidCxNet(**SLIM)
    for module in model.modules():  # non-default BN statistics, so buffers are checked too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model


def old_style_name(key: str) -> str:
    if ".denselayer" in key:
        for new, old in OLD_NAMES.items():
            key = key.replace(new, old)
    return f"module.densenet121.features.{key}"


def chexnet_state_dict(model: CovidCxNet) -> dict[str, torch.Tensor]:
    state = {
        old_style_name(key): tensor.clone()
        for key, tensor in model.features.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    width = model.features.norm5.num_features
    state["module.densenet121.classifier.0.weight"] = torch.randn(14, width)
    state["module.densenet121.classifier.0.bias"] = torch.randn(14)
    return state


def save_checkpoint(path, state: dict, wrapped: bool = True):
    checkpoint = {"epoch": 3, "arch": "densenet121", "state_dict": state,
                  "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}
    torch.save(checkpoint if wrapped else state, path)
    return path


def test_old_names_are_really_old():
    names = chexnet_state_dict(slim_model(0))
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in names
    assert "module.densenet121.features.transition1.norm.weight" in names
    assert "module.densenet121.features.conv0.weight" in names


def test_mapping_gives_todays_torchvision_names_without_the_classifier():
    source = slim_model(0)
    mapped = chexnet_to_densenet(chexnet_state_dict(source))
    expected = {f"features.{k}" for k in source.features.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(mapped) == expected


@pytest.mark.parametrize("wrapped", [True, False], ids=["under_state_dict", "bare"])
def test_every_feature_tensor_is_loaded_and_the_head_left_alone(tmp_path, wrapped):
    source, target = slim_model(0), slim_model(1)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    path = save_checkpoint(tmp_path / "model.pth.tar", chexnet_state_dict(source), wrapped)

    left_at_init = load_chexnet(path, target)

    for key, tensor in source.features.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(target.features.state_dict()[key], tensor), key
    assert left_at_init == sorted(f"head.{k}" for k in head_before)
    for key, tensor in target.head.state_dict().items():
        assert torch.equal(tensor, head_before[key])


def test_a_missing_feature_tensor_raises(tmp_path):
    state = chexnet_state_dict(slim_model(0))
    del state["module.densenet121.features.denseblock2.denselayer1.conv.2.weight"]
    path = save_checkpoint(tmp_path / "model.pth.tar", state)
    with pytest.raises(ValueError, match=r"missing: features\.denseblock2\.denselayer1\.conv2\.weight"):
        load_chexnet(path, slim_model(1))


def test_a_differently_shaped_network_raises(tmp_path):
    path = save_checkpoint(tmp_path / "model.pth.tar", chexnet_state_dict(slim_model(0)))
    wider = CovidCxNet(growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=16)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_chexnet(path, wider)


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "model.pth.tar"
    torch.save({"state_dict": chexnet_state_dict(slim_model(0)), "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match="arbitrary code"):
        load_chexnet(path, slim_model(1))
