"""Inf-Net (full and slim) and the multi-class GGO/consolidation network: outputs, gradients, ONNX, sizes."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models import create_model
from models.infnet import DoubleConv, InfNet, InfNetMultiClass, reverse_attention

SIZE = 64
SIDE_OUTPUTS = ("lateral_map_5", "lateral_map_4", "lateral_map_3", "lateral_map_2", "edge_map")
TINY_MULTICLASS = dict(width=8)
# The published count (Inf-Net paper, Table III: 33.122 M) is the authors' model: Res2Net-50 v1b
# (timm's res2net50d) on RGB input, counted with the backbone's unused 1000-class ImageNet FC.
PUBLISHED_PARAMETERS = 33_121_721
IMAGENET_FC = 2048 * 1000 + 1000


def test_factories_are_registered():
    assert {"infnet", "infnet_slim", "infnet_multiclass"} <= set(models.available_models())


@pytest.fixture(scope="module")
def slim():
    torch.manual_seed(0)
    return create_model("infnet_slim")


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("size", [64, 96])
def test_train_mode_returns_five_side_outputs_at_input_size(num_classes, size):
    model = create_model("infnet_slim", num_classes=num_classes).train()
    outputs = model(torch.rand(2, 1, size, size))
    assert isinstance(outputs, tuple) and len(outputs) == len(SIDE_OUTPUTS)
    for name, output in zip(SIDE_OUTPUTS[:4], outputs[:4]):
        assert output.shape == (2, num_classes, size, size), name
    assert outputs[4].shape == (2, 1, size, size)  # the edge map is class-agnostic


def test_eval_mode_returns_the_final_map_only(slim):
    image = torch.rand(2, 1, SIZE, SIZE)
    slim.eval()
    with torch.no_grad():
        final = slim(image)
        sides = slim.side_outputs(image)
    assert isinstance(final, torch.Tensor) and final.shape == (2, 1, SIZE, SIZE)
    assert torch.equal(final, sides[3])  # lateral_map_2


def test_non_square_inputs_work(slim):
    slim.eval()
    with torch.no_grad():
        assert slim(torch.rand(1, 1, 64, 96)).shape == (1, 1, 64, 96)


def test_every_parameter_learns_from_the_deep_supervision_loss():
    model = create_model("infnet_slim").train()
    image = torch.rand(2, 1, SIZE, SIZE)
    target = (torch.rand(2, 1, SIZE, SIZE) > 0.5).float()
    loss = sum(F.binary_cross_entropy_with_logits(output, target) for output in model(image))
    loss.backward()
    # Connected, not necessarily non-zero: timm zero-initialises each residual block's last BN scale.
    assert not [name for name, p in model.named_parameters() if p.grad is None]


def test_side_outputs_are_supervised_at_their_own_depth():
    """The edge map comes from layer1 alone; S_g does not see the reverse-attention stages."""
    model = create_model("infnet_slim").train()
    outputs = model(torch.rand(2, 1, SIZE, SIZE))

    def touched(output):
        model.zero_grad(set_to_none=True)
        output.sum().backward(retain_graph=True)
        return {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("resnet") else "")
                for name, p in model.named_parameters() if p.grad is not None}

    edge = touched(outputs[4])
    assert "resnet.layer1" in edge and "edge_features" in edge
    assert not edge & {"resnet.layer2", "ra2", "ra3", "ra4", "ParDec", "rfb2_1"}
    global_map = touched(outputs[0])
    assert {"ParDec", "rfb2_1", "rfb3_1", "rfb4_1", "resnet.layer4"} <= global_map
    assert not global_map & {"ra2", "ra3", "ra4", "edge_features", "edge_head"}
    final = touched(outputs[3])
    assert {"ra2", "ra3", "ra4", "ParDec", "edge_features"} <= final and "edge_head" not in final


def test_reverse_attention_is_one_minus_the_foreground_probability():
    logits = torch.tensor([[[[-2.0, 0.0, 3.0]]]])
    assert torch.allclose(reverse_attention(logits, 1), 1 - torch.sigmoid(logits))
    three = torch.randn(2, 3, 4, 4)
    background = torch.softmax(three, dim=1)[:, :1]
    assert torch.allclose(reverse_attention(three, 3), background)
    assert reverse_attention(three, 3).shape == (2, 1, 4, 4)


@pytest.mark.parametrize("shape", [(100, 90), (64, 48), (20, 64), (80, 64)])
def test_sides_must_be_multiples_of_32_and_the_error_names_sizes_that_work(slim, shape):
    height, width = shape
    nearest = "x".join(str(max(32, math.floor(side / 32 + 0.5) * 32)) for side in shape)  # halves round up
    padded = "x".join(str(-(-side // 32) * 32) for side in shape)
    message = f"multiples of 32, got {height}x{width}; resize to {nearest} or pad to {padded}"
    with pytest.raises(ValueError, match=message):
        slim(torch.rand(1, 1, height, width))


def test_onnx_export_of_the_slim_model_matches_pytorch(slim):
    ort = pytest.importorskip("onnxruntime")
    slim.eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        slim, (torch.rand(1, 1, SIZE, SIZE),), buffer, input_names=["image"], output_names=["output"],
        dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}}, dynamo=False, opset_version=17,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert len(session.get_outputs()) == 1
    image = torch.rand(3, 1, SIZE, SIZE)
    (onnx_output,) = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        expected = slim(image).numpy()
    assert onnx_output.shape == (3, 1, SIZE, SIZE)
    assert np.abs(onnx_output - expected).max() < 1e-4


def test_full_inf_net_matches_the_published_parameter_count():
    published_layout = InfNet(in_channels=3, backbone="res2net50d")
    assert _parameters(published_layout) + IMAGENET_FC == PUBLISHED_PARAMETERS
    default = create_model("infnet")  # timm res2net50_26w_4s (7x7 stem), one input channel
    count = _parameters(default)
    print(f"Inf-Net (res2net50_26w_4s, 1 channel): {count:,} parameters; backbone {_parameters(default.resnet):,}")
    assert 30e6 < count < 34e6
    assert _parameters(create_model("infnet_slim")) < 1.5e6


def test_full_inf_net_runs_at_small_size():
    model = create_model("infnet", num_classes=3).train()
    outputs = model(torch.rand(1, 1, SIZE, SIZE))
    assert [tuple(o.shape) for o in outputs] == [(1, 3, SIZE, SIZE)] * 4 + [(1, 1, SIZE, SIZE)]


def test_backbone_must_be_resnet_family():
    with pytest.raises(ValueError, match="ResNet-family"):
        InfNet(backbone="efficientnet_b0")


@pytest.mark.parametrize("train", [True, False])
def test_multiclass_network_takes_slice_and_prior_and_returns_three_maps(train):
    model = create_model("infnet_multiclass", **TINY_MULTICLASS).train(train)
    output = model(torch.rand(2, 2, 48, 80))
    assert output.shape == (2, 3, 48, 80)


def test_multiclass_network_learns_and_refuses_bad_sizes():
    model = create_model("infnet_multiclass", **TINY_MULTICLASS).train()
    labels = torch.randint(0, 3, (2, 32, 32))
    F.cross_entropy(model(torch.rand(2, 2, 32, 32)), labels).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="multiples of 16, got 40x40; resize to 48x48 or pad to 48x48"):
        model(torch.rand(1, 2, 40, 40))


def test_multiclass_network_has_the_published_unet_layout():
    model = InfNetMultiClass(in_channels=6)  # published input: RGB slice + prior repeated 3x
    blocks = [m.double_conv for m in model.modules() if isinstance(m, DoubleConv)]
    # inc 64, downs 128/256/512/512 (bilinear halves the bottom), ups 256/128/64/64, head 3
    assert [block[3].out_channels for block in blocks] == [64, 128, 256, 512, 512, 256, 128, 64, 64]
    assert [block[0].out_channels for block in blocks[5:]] == [512, 256, 128, 64]  # the ups' mid widths
    assert model.outc.out_channels == 3
    print(f"multi-class UNet (6 input channels): {_parameters(model):,} parameters")
    assert 17.0e6 < _parameters(model) < 17.5e6


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
