"""Paper 002's four branches: shapes, pooled features, shared infected backbone, fusion, freezing, ONNX."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import densenet169, resnet50

import models
from models import create_model
from models.multisource import BRANCH_NAMES, BranchNet, FusionNet, InfectedBranch, build_backbone

SIZE = 64
TINY = 0.125  # ResNet50 -> 256 output channels, DenseNet169 -> 208
BACKBONES = ("resnet50", "densenet169")
FULL_FEATURES = {"resnet50": 2048, "densenet169": 1664}  # K of Eq. 1 (the paper's "1644" is a typo)
INPUT_NAMES = ["global_image", "heatmap_crop", "left_image", "right_image"]


def _images(batch=2, size=SIZE, count=4):
    return tuple(torch.rand(batch, 1, size, size) for _ in range(count))


@pytest.fixture(scope="module", params=BACKBONES)
def fusion(request):
    torch.manual_seed(0)
    return create_model("multisource_fusion", backbone=request.param, width=TINY)


def test_factories_are_registered():
    assert {"multisource_branch", "multisource_infected", "multisource_fusion"} <= set(models.available_models())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_branch_gives_features_pooled_features_and_one_logit(backbone):
    branch = create_model("multisource_branch", backbone=backbone, width=TINY).eval()
    (image,) = _images(count=1)
    with torch.no_grad():
        features, pooled, logit = branch.features(image), branch.pooled(image), branch(image)
    assert features.shape == (2, branch.feature_dim, SIZE // 32, SIZE // 32)
    assert pooled.shape == (2, branch.feature_dim) and logit.shape == (2, 1)
    assert torch.allclose(pooled, features.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(logit, branch.fc(pooled))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradcam_layer_outputs_the_features_and_gets_gradients(backbone):
    branch = create_model("multisource_branch", backbone=backbone, width=TINY).eval()
    seen = {}

    def hook(_module, _inputs, output):
        seen["output"] = output.detach().clone()
        output.register_hook(lambda grad: seen.__setitem__("grad", grad.shape))

    handle = branch.gradcam_layer.register_forward_hook(hook)
    try:
        (image,) = _images(batch=1, count=1)
        branch(image)[0, 0].backward()
    finally:
        handle.remove()
    with torch.no_grad():
        assert torch.equal(seen["output"], branch.features(image))
    assert seen["grad"] == seen["output"].shape


@pytest.mark.parametrize("backbone, reference", [("resnet50", resnet50), ("densenet169", densenet169)])
def test_full_width_backbones_are_torchvisions(backbone, reference):
    body, feature_dim = build_backbone(backbone, in_channels=3, width=1.0)
    assert feature_dim == FULL_FEATURES[backbone]
    torchvision_net = reference()
    imagenet_head = torchvision_net.fc if backbone == "resnet50" else torchvision_net.classifier
    expected = {name: p.shape for name, p in torchvision_net.named_parameters()
                if not name.startswith(("fc.", "classifier."))}
    assert {name: p.shape for name, p in body.named_parameters()} == expected
    one_channel = BranchNet(backbone, in_channels=1)
    # One input channel: the first convolution loses 2 * 64 * 7 * 7 weights; the FC gives one logit.
    one_logit_fc = feature_dim + 1
    expected_count = _parameters(torchvision_net) - _parameters(imagenet_head) - 2 * 64 * 49 + one_logit_fc
    assert _parameters(one_channel) == expected_count
    print(f"{backbone} branch, full width: {_parameters(one_channel):,} parameters")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_width_scales_the_feature_dimension(backbone):
    _, quarter = build_backbone(backbone, width=0.25)
    assert quarter == FULL_FEATURES[backbone] // 4


def test_bad_backbone_and_width_are_refused():
    with pytest.raises(ValueError, match="resnet50, densenet169"):
        BranchNet("vgg16")
    with pytest.raises(ValueError, match="width must be positive"):
        BranchNet("resnet50", width=0)


def test_infected_branch_shares_one_backbone_and_sees_the_global_features():
    branch = create_model("multisource_infected", backbone="resnet50", width=TINY, global_feature_dim=100).eval()
    assert branch.fc.in_features == 2 * branch.feature_dim + 100
    assert _parameters(branch) == _parameters(branch.body) + _parameters(branch.fc)  # one backbone for both sides
    left, right = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 96, 64)  # sub-images may differ in size
    with torch.no_grad():
        logit = branch(left, right, torch.zeros(2, 100))
        assert logit.shape == (2, 1)
        # A healthy slice (blank sub-images): only the global features can move the decision.
        blank = torch.zeros(2, 1, 64, 64)
        assert not torch.allclose(branch(blank, blank, torch.zeros(2, 100)), branch(blank, blank, torch.ones(2, 100)))
        swapped = branch(right, left, torch.zeros(2, 100))
    assert not torch.allclose(logit, swapped)  # left and right keep their places in the concatenation


def test_fusion_is_one_fc_over_all_pooled_features(fusion):
    fusion.eval()
    global_image, heatmap_crop, left, right = _images()
    with torch.no_grad():
        features = fusion.fusion_features(global_image, heatmap_crop, left, right)
        expected = torch.cat([fusion.global_branch.pooled(global_image), fusion.heatmap_branch.pooled(heatmap_crop),
                              fusion.infected_branch.pooled(left, right)], dim=1)
        logit = fusion(global_image, heatmap_crop, left, right)
    dims = fusion.global_branch.feature_dim, fusion.heatmap_branch.feature_dim, fusion.infected_branch.feature_dim
    assert features.shape == (2, dims[0] + dims[1] + 2 * dims[2]) == (2, fusion.feature_dim)
    assert torch.allclose(features, expected)
    assert logit.shape == (2, 1) and torch.allclose(logit, fusion.fc(features))


def test_branch_logits_give_every_branch(fusion):
    fusion.eval()
    global_image, heatmap_crop, left, right = _images()
    with torch.no_grad():
        logits = fusion.branch_logits(global_image, heatmap_crop, left, right)
        pool_g = fusion.global_branch.pooled(global_image)
        assert tuple(logits) == BRANCH_NAMES
        assert torch.allclose(logits["global"], fusion.global_branch(global_image))
        assert torch.allclose(logits["heatmap"], fusion.heatmap_branch(heatmap_crop))
        assert torch.allclose(logits["infected"], fusion.infected_branch(left, right, pool_g))
        assert torch.allclose(logits["fusion"], fusion(global_image, heatmap_crop, left, right))


def test_frozen_branches_get_no_gradient_and_keep_their_statistics():
    model = create_model("multisource_fusion", backbone="resnet50", width=TINY).freeze_branches()
    model.train()
    assert all(not branch.training for branch in model.branches()) and model.training
    statistics = {name: b.clone() for name, b in model.named_buffers() if "running_mean" in name}
    F.binary_cross_entropy_with_logits(model(*_images()), torch.ones(2, 1)).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith("fc."), name
    assert all(torch.equal(b, statistics[name]) for name, b in model.named_buffers() if name in statistics)
    model.freeze_branches(False).train()
    assert all(p.requires_grad for p in model.parameters()) and model.global_branch.training


def test_fusion_gradcam_layer_is_the_global_branchs(fusion):
    assert fusion.gradcam_layer is fusion.global_branch.gradcam_layer
    assert isinstance(fusion.gradcam_layer, nn.Module)


def test_onnx_export_of_the_fusion_net_matches_pytorch():
    # ResNet50 only: the fusion code does not depend on the backbone, and tracing three DenseNet169s
    # takes ~20 s here; the DenseNet169 branch is exported below.
    model = create_model("multisource_fusion", backbone="resnet50", width=TINY).eval()
    _check_onnx(model, INPUT_NAMES, _images(batch=1), _images(batch=3))


def test_onnx_export_of_a_densenet169_branch_matches_pytorch():
    model = create_model("multisource_branch", backbone="densenet169", width=TINY).eval()
    _check_onnx(model, ["image"], _images(batch=1, count=1), _images(batch=3, count=1))


def _check_onnx(model, input_names, example, images):
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    torch.onnx.export(
        model, example, buffer, input_names=input_names, output_names=["output"],
        dynamic_axes={name: {0: "batch"} for name in input_names + ["output"]}, dynamo=False, opset_version=17,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == input_names and len(session.get_outputs()) == 1
    (onnx_output,) = session.run(None, {name: image.numpy() for name, image in zip(input_names, images)})
    with torch.no_grad():
        expected = model(*images).numpy()
    assert onnx_output.shape == (len(images[0]), 1)
    assert np.abs(onnx_output - expected).max() < 1e-4


def test_fusion_can_be_built_from_parts():
    global_branch, heatmap_branch = BranchNet(width=TINY), BranchNet(width=TINY)
    infected = InfectedBranch(width=TINY, global_feature_dim=global_branch.feature_dim)
    model = FusionNet(global_branch, heatmap_branch, infected)
    assert model.fc.in_features == 4 * global_branch.feature_dim


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
