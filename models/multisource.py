"""Multi-source attention classifier for CT slices (paper 002: Nguyen et al., "An Attention Mechanism
with Multiple Knowledge Sources for COVID-19 Detection from CT Images", AAAI 2021 workshop,
arXiv:2009.11008), over ResNet50 or DenseNet169 (torchvision architectures, random init).

Four branches (Fig. 2), each "backbone -> global average pool -> one FC -> sigmoid" (Eq. 3-5, BCE):

* global branch (``BranchNet``): the whole slice, I_g;
* heat-map branch (``BranchNet``): the crop I_h of the slice under the largest connected region of the
  binarised heat map (Eq. 1-2). Eq. 1, H = (sum_k f_k - min) / max over the global branch's last
  convolutional features f_k, is numpy code in ``core``; ``BranchNet.features`` gives it f_k;
* infected branch (``InfectedBranch``): the left and right sub-images I_in of the bounding box of
  the predicted infection go through ONE shared backbone; its FC sees [pool(left), pool(right),
  Pool_g] because healthy slices have no infection and only the global features can then decide;
* fusion branch (``FusionNet``): one FC over Pool_f = [Pool_g, Pool_h, Pool_in(left), Pool_in(right)].

Training is sequential (G, then H and I with G frozen, then F with all frozen: Algorithm 2), so
``FusionNet.freeze_branches()`` freezes the three branches (no gradients, batch-norm statistics kept).

Every network returns logits, (N, num_classes) with ``num_classes=1`` for COVID vs non-COVID.
``width`` scales the backbone for CPU (1.0 = the published network): ResNet50 stage widths
64-128-256-512 (x4 at the output) and DenseNet169's growth rate 32 and stem 64 are multiplied by it.

Registry names: ``multisource_branch`` (global or heat-map branch), ``multisource_infected``,
``multisource_fusion`` (the whole model, all branches built from one config).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import DenseNet
from torchvision.models.resnet import Bottleneck, conv1x1

from .resnet import _init_weights

BACKBONES = ("resnet50", "densenet169")
RESNET50_LAYERS = (3, 4, 6, 3)
DENSENET169_BLOCKS = (6, 12, 32, 32)
BRANCH_NAMES = ("global", "heatmap", "infected", "fusion")


def build_backbone(backbone: str, in_channels: int = 1, width: float = 1.0) -> tuple[nn.Sequential, int]:
    """The backbone up to its last convolutional feature map, and that map's channel count.

    At ``width=1`` the parameter names and shapes are torchvision's (``resnet50()`` minus ``fc``,
    ``densenet169().features`` under ``features``), so torchvision checkpoints load with ``strict=False``
    after adapting the first convolution to ``in_channels``.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if backbone == "resnet50":
        return _resnet50(in_channels, width)
    if backbone == "densenet169":
        return _densenet169(in_channels, width)
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


def _resnet50(in_channels: int, width: float) -> tuple[nn.Sequential, int]:
    # torchvision's ResNet fixes the stage widths at 64..512; this rebuilds its layout with the same
    # Bottleneck blocks so that the widths can scale (``width_per_group`` alone leaves 2048 outputs).
    stem = max(1, round(64 * width))
    layers = OrderedDict(
        conv1=nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False),
        bn1=nn.BatchNorm2d(stem),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(3, 2, 1),
    )
    channels = stem
    for stage, blocks in enumerate(RESNET50_LAYERS):
        planes = max(1, round(64 * 2**stage * width))
        stride = 1 if stage == 0 else 2
        layers[f"layer{stage + 1}"], channels = _resnet_stage(channels, planes, blocks, stride)
    body = nn.Sequential(layers)
    _init_weights(body)  # torchvision's ResNet initialisation, as the project's other ResNets
    return body, channels


def _resnet_stage(in_ch: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """torchvision ``ResNet._make_layer`` for Bottleneck blocks."""
    out_ch = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    stage = [Bottleneck(in_ch, planes, stride, downsample)]
    stage += [Bottleneck(out_ch, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*stage), out_ch


def _densenet169(in_channels: int, width: float) -> tuple[nn.Sequential, int]:
    growth, stem = max(1, round(32 * width)), max(1, round(64 * width))
    features = DenseNet(growth, DENSENET169_BLOCKS, stem).features
    if in_channels != 3:
        features.conv0 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(features.conv0.weight)  # as torchvision's DenseNet initialises it
    # torchvision applies this ReLU functionally; a module (not in place) lets Grad-CAM hook its output.
    body = nn.Sequential(OrderedDict(features=features, relu=nn.ReLU()))
    return body, features.norm5.num_features


class BranchNet(nn.Module):
    """One classification branch (global or heat-map): backbone -> global average pool -> one FC.

    Args:
        backbone: ``"resnet50"`` or ``"densenet169"``.
        in_channels: 1 (the lung-windowed CT slice or its crop).
        num_classes: 1 (COVID vs non-COVID with a sigmoid, as the paper's BCE).
        width: backbone width multiplier (1.0 = published).

    ``features(x)`` is the last convolutional feature map f_k (N, feature_dim, h, w) that Eq. 1 sums;
    ``pooled(x)`` its global average (N, feature_dim), Pool_g or Pool_h; ``gradcam_layer`` the module
    that outputs ``features`` (ResNet ``layer4``, DenseNet's final ReLU).
    """

    def __init__(self, backbone="resnet50", in_channels=1, num_classes=1, width=1.0):
        super().__init__()
        self.backbone_name = backbone
        self.body, self.feature_dim = build_backbone(backbone, in_channels, width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.body[-1]

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)

    def pooled(self, image: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(image)).flatten(1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(image))


class InfectedBranch(nn.Module):
    """Infected branch: one backbone shared by the left and right infected sub-images, and one FC over
    [pool(left), pool(right), Pool_g] (the global pooled features, from the frozen global branch).

    Args:
        backbone, in_channels, num_classes, width: as ``BranchNet``.
        global_feature_dim: length of Pool_g; ``None`` = this backbone's ``feature_dim`` (the global
            branch uses the same backbone and width).
    """

    def __init__(self, backbone="resnet50", global_feature_dim=None, in_channels=1, num_classes=1, width=1.0):
        super().__init__()
        self.backbone_name = backbone
        self.body, self.feature_dim = build_backbone(backbone, in_channels, width)
        self.global_feature_dim = global_feature_dim or self.feature_dim
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * self.feature_dim + self.global_feature_dim, num_classes)

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.body[-1]

    def pooled(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Pool_in = [pool(left), pool(right)], (N, 2 * feature_dim). Left and right may differ in size."""
        return torch.cat([self.pool(self.body(left)).flatten(1), self.pool(self.body(right)).flatten(1)], dim=1)

    def forward(self, left: torch.Tensor, right: torch.Tensor, global_pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.pooled(left, right), global_pooled], dim=1))


class FusionNet(nn.Module):
    """Fusion branch over the three others: one FC over Pool_f = [Pool_g, Pool_h, Pool_in].

    ``forward(global_image, heatmap_crop, left_image, right_image)`` -> (N, num_classes) fusion logit
    (the one output ONNX export and serving see). ``fusion_features`` returns Pool_f (the t-SNE of
    Fig. 3), ``branch_logits`` every branch's logit for Table 1. ``freeze_branches()`` freezes the
    global, heat-map and infected branches (Algorithm 2, stage III).
    """

    def __init__(self, global_branch: BranchNet, heatmap_branch: BranchNet, infected_branch: InfectedBranch,
                 num_classes=1):
        super().__init__()
        self.global_branch = global_branch
        self.heatmap_branch = heatmap_branch
        self.infected_branch = infected_branch
        self.feature_dim = global_branch.feature_dim + heatmap_branch.feature_dim + 2 * infected_branch.feature_dim
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.branches_frozen = False

    @property
    def gradcam_layer(self) -> nn.Module:
        """The global branch's last block: the fusion CAM is drawn on the whole slice (Fig. 3)."""
        return self.global_branch.gradcam_layer

    def branches(self) -> tuple[nn.Module, ...]:
        return self.global_branch, self.heatmap_branch, self.infected_branch

    def freeze_branches(self, frozen: bool = True) -> FusionNet:
        """Stop gradients into the three branches and keep their batch norms in eval mode."""
        self.branches_frozen = frozen
        for branch in self.branches():
            branch.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> FusionNet:
        super().train(mode)
        if self.branches_frozen:
            for branch in self.branches():
                branch.eval()  # frozen means frozen statistics too, not only frozen weights
        return self

    def _pooled(self, global_image, heatmap_crop, left_image, right_image):
        return (self.global_branch.pooled(global_image), self.heatmap_branch.pooled(heatmap_crop),
                self.infected_branch.pooled(left_image, right_image))

    def fusion_features(self, global_image, heatmap_crop, left_image, right_image) -> torch.Tensor:
        """Pool_f = [Pool_g, Pool_h, Pool_in(left), Pool_in(right)], (N, feature_dim)."""
        return torch.cat(self._pooled(global_image, heatmap_crop, left_image, right_image), dim=1)

    def forward(self, global_image, heatmap_crop, left_image, right_image) -> torch.Tensor:
        return self.fc(self.fusion_features(global_image, heatmap_crop, left_image, right_image))

    def branch_logits(self, global_image, heatmap_crop, left_image, right_image) -> dict[str, torch.Tensor]:
        """Logits of every branch, keyed by ``BRANCH_NAMES``: global, heatmap, infected, fusion."""
        pool_g, pool_h, pool_in = self._pooled(global_image, heatmap_crop, left_image, right_image)
        return {
            "global": self.global_branch.fc(pool_g),
            "heatmap": self.heatmap_branch.fc(pool_h),
            "infected": self.infected_branch.fc(torch.cat([pool_in, pool_g], dim=1)),
            "fusion": self.fc(torch.cat([pool_g, pool_h, pool_in], dim=1)),
        }


def multisource_branch(backbone="resnet50", in_channels=1, num_classes=1, width=1.0) -> BranchNet:
    """Global or heat-map branch (same network, different input)."""
    return BranchNet(backbone, in_channels, num_classes, width)


def multisource_infected(backbone="resnet50", in_channels=1, num_classes=1, width=1.0,
                         global_feature_dim=None) -> InfectedBranch:
    return InfectedBranch(backbone, global_feature_dim, in_channels, num_classes, width)


def multisource_fusion(backbone="resnet50", in_channels=1, num_classes=1, width=1.0) -> FusionNet:
    """The whole four-branch model from one config (what the registry rebuilds before loading weights)."""
    global_branch = BranchNet(backbone, in_channels, num_classes, width)
    heatmap_branch = BranchNet(backbone, in_channels, num_classes, width)
    infected_branch = InfectedBranch(backbone, global_branch.feature_dim, in_channels, num_classes, width)
    return FusionNet(global_branch, heatmap_branch, infected_branch, num_classes)
