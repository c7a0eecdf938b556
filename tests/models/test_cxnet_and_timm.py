"""COVID-CXNet's two networks and the HRNet paper's timm classifiers: shapes, sizes, Grad-CAM layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from models import create_model
from models.cxnet import CovidCxNet, CovidCxNetBase

SLIM_DENSENET = dict(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16)
# (factory, config, input channels): slim where the factory allows it, tiny inputs everywhere.
ONE_INPUT_CLASSIFIERS = {
    "cxnet_base": (dict(input_size=64), 3),
    "covid_cxnet": (SLIM_DENSENET, 3),
    "hrnet": ({}, 1),
    "timm_resnet152": ({}, 1),
    "timm_densenet121": ({}, 1),
    "timm_efficientnet_b4": ({}, 1),
}
SIZE = 64


def test_factories_are_registered():
    assert set(ONE_INPUT_CLASSIFIERS) <= set(models.available_models())


@pytest.mark.parametrize("name", ONE_INPUT_CLASSIFIERS)
def test_output_is_one_logit_per_image(name):
    config, channels = ONE_INPUT_CLASSIFIERS[name]
    model = create_model(name, **config).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, SIZE, SIZE)).shape == (2, 1)


@pytest.mark.parametrize("name", ["cxnet_base", "covid_cxnet"])
def test_cxnet_models_take_other_channel_and_output_counts(name):
    config, _ = ONE_INPUT_CLASSIFIERS[name]
    model = create_model(name, **config, in_chans=1, num_outputs=3).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 3)


@pytest.mark.parametrize("name", ["hrnet", "timm_densenet121"])
def test_timm_classifiers_take_other_channel_and_class_counts(name):
    model = create_model(name, num_classes=3, in_chans=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, SIZE, SIZE)).shape == (1, 3)


@pytest.mark.parametrize("name", ONE_INPUT_CLASSIFIERS)
def test_gradcam_layer_is_inside_the_model_and_gets_gradients(name):
    config, channels = ONE_INPUT_CLASSIFIERS[name]
    model = create_model(name, **config).eval()
    layer = model.gradcam_layer
    assert isinstance(layer, nn.Module)
    assert any(module is layer for module in model.modules())
    seen = {}

    def hook(_module, _inputs, output):
        seen["shape"] = tuple(output.shape)
        output.register_hook(lambda grad: seen.__setitem__("grad", tuple(grad.shape)))

    handle = layer.register_forward_hook(hook)
    model(torch.rand(1, channels, SIZE, SIZE))[0, 0].backward()
    handle.remove()
    assert len(seen["shape"]) == 4 and seen["grad"] == seen["shape"]


def test_base_model_parameter_count_at_224_px():
    # Convolutions: 3*32*9 + 32 = 896, then four of 32*32*9 + 32 = 9,248.
    convolutions = 896 + 4 * 9_248
    # 3x3 'valid' at stride 2: 224 -> 111 -> 55 -> 27 -> 13 -> 6, so 32*6*6 = 1,152 features.
    fully_connected = (1_152 * 10 + 10) + (10 * 10 + 10) + (10 * 1 + 1)
    assert convolutions + fully_connected == 49_539
    assert _parameters(CovidCxNetBase(in_chans=3, input_size=224)) == 49_539


def test_base_model_parameter_count_at_stride_1():
    # 224 - 5*2 = 214, so the flatten is 32*214*214 = 1,465,472 features.
    fully_connected = (1_465_472 * 10 + 10) + (10 * 10 + 10) + (10 * 1 + 1)
    assert _parameters(CovidCxNetBase(input_size=224, stride=1)) == 896 + 4 * 9_248 + fully_connected


def test_base_model_rejects_an_input_too_small_for_five_convolutions():
    with pytest.raises(ValueError, match="too small"):
        CovidCxNetBase(input_size=40)


def test_covid_cxnet_is_densenet121_with_a_10_unit_head():
    model = CovidCxNet()
    # torchvision's DenseNet-121 has 7,978,856 parameters, 1024*1000 + 1000 of them in its classifier.
    densenet121_features = 7_978_856 - (1_024 * 1_000 + 1_000)
    head = (1_024 * 10 + 10) + (10 * 1 + 1)
    assert _parameters(model.features) == densenet121_features
    assert _parameters(model) == densenet121_features + head  # ~7M, as the paper states
    assert model.head[2].p == 0.2


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
