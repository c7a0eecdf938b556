"""Inf-Net (Fan et al., "Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT Images",
IEEE TMI 39(8), 2020, doi:10.1109/TMI.2020.2996645) and its multi-class GGO/consolidation network.

Layout (Fig. 2 of the paper; module names and widths follow the authors' public code,
``Code/model_lung_infection/InfNet_Res2Net.py``, so the parts can be compared one to one):

* backbone: Res2Net-50 (26w x 4s); ``layer1`` (1/4) is the low-level feature, ``layer2..4``
  (1/8, 1/16, 1/32) the high-level ones;
* ``rfb2_1``/``rfb3_1``/``rfb4_1``: receptive-field blocks bringing the high-level features to
  ``channels`` (32);
* ``ParDec``: the parallel partial decoder, which aggregates the three RFB outputs at 1/8 into the
  global map S_g (Sec. III-B, Eq. 2);
* edge attention (Sec. III-C): three convolutions on ``layer1`` give the edge features e_att, and one
  more the edge map, supervised with an edge BCE (Eq. 4);
* three reverse-attention stages, on ``layer4``, ``layer3`` and ``layer2`` (Sec. III-D, Eq. 3): the
  next-higher map is resized, turned into the reverse-attention weight ``1 - sigmoid(map)``, multiplied
  into the features, concatenated with the resized edge features, refined by convolutions and added
  back to the map (residual refinement);
* deep supervision: S_g and the three refined maps are side outputs (``lateral_map_5`` ... ``_2``),
  trained with weighted IoU + weighted BCE (Eq. 5-6; the losses live in ``training``).

Choices where the code and the paper differ, or where this project needs more:
* the published ``BasicConv2d`` is convolution + batch norm; its ReLU is created but never applied.
  This is kept (the published figures come from that network); the RFB block ends with a ReLU and the
  reverse-attention stages apply ReLUs between their convolutions, as in the code.
* the published backbone is ``res2net50_v1b_26w_4s`` (deep stem, average-pool shortcuts, timm's
  ``res2net50d``); the default here is timm's ``res2net50_26w_4s`` (the plain Res2Net-50 of the paper's
  text). Any timm ResNet-family name works as ``backbone``.
* the edge map has one channel whatever ``num_classes`` is (an edge is class-agnostic).
* ``num_classes > 1`` (background, GGO, consolidation; softmax): the reverse-attention weight is then the
  background probability ``softmax(map)[:, 0]``, i.e. 1 - P(any infection), the multi-class reading of
  ``1 - sigmoid(map)``. The paper's own multi-class model is ``InfNetMultiClass`` below.
* train mode returns all side outputs; eval mode returns the final map only (one tensor for ONNX export
  and serving). All outputs are logits at input resolution.

Size: with ``backbone="res2net50d"`` and ``in_channels=3`` this network plus the 2,049,000-parameter
ImageNet FC that the authors' backbone carries unused is 33,121,721 parameters, the paper's 33.122 M
(Table III); the default (``res2net50_26w_4s``, one channel) has 31,047,217.

Weights are always randomly initialised (``pretrained=False``): nothing is downloaded. timm
zero-initialises each residual block's last batch-norm scale, so every block starts as the identity.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.models.res2net import Bottle2neck
from timm.models.resnet import ResNet
from torch import nn

INPUT_MULTIPLE = 32  # the backbone's deepest stride: every side output must map back exactly
UNET_INPUT_MULTIPLE = 16  # four 2x max-pools in the multi-class UNet

# The CPU variant's backbone: Res2Net bottlenecks (26w x 4s), one per stage, a quarter of the channels,
# and the published v1b layout (3-conv deep stem, average-pool shortcuts). timm's plain 7x7 stem is
# always 64 wide, and at 1/2 resolution that stem alone made a training step ~1.3x slower.
SLIM_BACKBONE = "res2net_slim"
SLIM_BACKBONE_SPEC = dict(
    layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_type="deep", stem_width=8, avg_down=True,
)


def check_input_size(image: torch.Tensor, multiple: int, model_name: str) -> None:
    """Refuse sides that are not multiples of ``multiple``, naming the sizes that would work (STYLE.md 9)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return
    height, width = image.shape[-2:]
    if height % multiple == 0 and width % multiple == 0 and height > 0 and width > 0:
        return
    nearest = tuple(max(multiple, math.floor(side / multiple + 0.5) * multiple) for side in (height, width))
    padded = tuple(math.ceil(side / multiple) * multiple for side in (height, width))
    raise ValueError(
        f"{model_name} needs height and width that are multiples of {multiple}, got {height}x{width}; "
        f"resize to {nearest[0]}x{nearest[1]} or pad to {padded[0]}x{padded[1]}"
    )


class BasicConv2d(nn.Module):
    """Convolution + batch norm, without activation (as published: the ReLU there is never called)."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return self.bn(self.conv(x))


class ReceptiveFieldBlock(nn.Module):
    """RFB (Liu et al., ECCV 2018, as modified in the Inf-Net code): four branches of growing
    receptive field (1x1; then 1xk, kx1 and a 3x3 conv at dilation k for k = 3, 5, 7), concatenated,
    fused by a 3x3 conv and added to a 1x1 projection of the input, then ReLU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.branch0 = BasicConv2d(in_ch, out_ch, 1)
        self.branch1 = self._branch(in_ch, out_ch, 3)
        self.branch2 = self._branch(in_ch, out_ch, 5)
        self.branch3 = self._branch(in_ch, out_ch, 7)
        self.conv_cat = BasicConv2d(4 * out_ch, out_ch, 3, padding=1)
        self.conv_res = BasicConv2d(in_ch, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _branch(in_ch, out_ch, k):
        return nn.Sequential(
            BasicConv2d(in_ch, out_ch, 1),
            BasicConv2d(out_ch, out_ch, (1, k), padding=(0, k // 2)),
            BasicConv2d(out_ch, out_ch, (k, 1), padding=(k // 2, 0)),
            BasicConv2d(out_ch, out_ch, 3, padding=k, dilation=k),
        )

    def forward(self, x):
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return self.relu(self.conv_cat(torch.cat(branches, dim=1)) + self.conv_res(x))


class PartialDecoder(nn.Module):
    """Parallel partial decoder (Sec. III-B, Eq. 2; Wu et al., CPD, CVPR 2019): aggregates the
    1/32, 1/16 and 1/8 RFB features by up-sampling and element-wise products into S_g at 1/8."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv_upsample1 = BasicConv2d(channels, channels, 3, padding=1)
        self.conv_upsample2 = BasicConv2d(channels, channels, 3, padding=1)
        self.conv_upsample3 = BasicConv2d(channels, channels, 3, padding=1)
        self.conv_upsample4 = BasicConv2d(channels, channels, 3, padding=1)
        self.conv_upsample5 = BasicConv2d(2 * channels, 2 * channels, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * channels, 2 * channels, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * channels, 3 * channels, 3, padding=1)
        self.conv4 = BasicConv2d(3 * channels, 3 * channels, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * channels, num_classes, 1)

    def forward(self, f5, f4, f3):
        up = self.upsample
        f4_gated = self.conv_upsample1(up(f5)) * f4
        f3_gated = self.conv_upsample2(up(up(f5))) * self.conv_upsample3(up(f4)) * f3
        merged4 = self.conv_concat2(torch.cat([f4_gated, self.conv_upsample4(up(f5))], dim=1))
        merged3 = self.conv_concat3(torch.cat([f3_gated, self.conv_upsample5(up(merged4))], dim=1))
        return self.conv5(self.conv4(merged3))


class ReverseAttentionStage(nn.Module):
    """One reverse-attention stage (Eq. 3): R = concat(conv1x1(f (x) A), e_att), refined, plus the map.

    ``A = 1 - sigmoid(coarse)`` for one class; for several, the background probability (see module note).
    ``kernel`` and ``depth`` follow the code: the 1/32 stage has three 5x5 convs of 256 then a 1x1 to the
    classes, the others two 3x3 convs of 64 then a 3x3 to the classes.
    """

    def __init__(self, in_ch, width, edge_ch, num_classes, kernel, depth):
        super().__init__()
        self.reduce = BasicConv2d(in_ch, width, 1)
        pad = kernel // 2
        refine = [BasicConv2d(width + edge_ch, width, kernel, padding=pad)]
        refine += [BasicConv2d(width, width, kernel, padding=pad) for _ in range(depth - 1)]
        self.refine = nn.ModuleList(refine)
        head_kernel = 1 if kernel == 5 else 3
        self.head = BasicConv2d(width, num_classes, head_kernel, padding=head_kernel // 2)
        self.num_classes = num_classes

    def forward(self, features, coarse, edge_features):
        weighted = features * reverse_attention(coarse, self.num_classes)
        x = torch.cat([self.reduce(weighted), edge_features], dim=1)
        for conv in self.refine:
            x = F.relu(conv(x))
        return self.head(x) + coarse  # residual refinement of the coarser map


def reverse_attention(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, 1, h, w) weight that is high where the coarser map sees no infection yet (Eq. 3's A_i).

    ``num_classes`` is passed rather than read from ``logits`` so that ONNX tracing sees a constant.
    """
    if num_classes == 1:
        return 1 - torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, :1]


class InfNet(nn.Module):
    """Inf-Net: Res2Net backbone, RFB, parallel partial decoder, edge attention, three reverse-attention
    stages, deep supervision.

    Args:
        in_channels: image channels (1: the lung-windowed CT slice).
        num_classes: 1 (infection, sigmoid) or 3 (background / GGO / consolidation, softmax).
        backbone: a timm ResNet-family name (default the paper's Res2Net-50 26w x 4s), or
            ``"res2net_slim"`` (Res2Net bottlenecks, one per stage, quarter width, deep stem: the CPU
            variant, ~1.1 M parameters in all).
        channels: RFB / partial-decoder width (32 in the paper).
        decoder_width: reverse-attention and edge width (64 in the code; the 1/32 stage uses 4x).

    ``forward`` in train mode returns ``(lateral_map_5, lateral_map_4, lateral_map_3, lateral_map_2,
    edge_map)``: S_g, the three refined maps (1/32, 1/16, 1/8 stages) and the edge map, logits of shape
    (N, num_classes, H, W) ((N, 1, H, W) for the edge). In eval mode it returns ``lateral_map_2`` only.
    H and W must be multiples of 32.
    """

    def __init__(self, in_channels=1, num_classes=1, backbone="res2net50_26w_4s", channels=32, decoder_width=64):
        super().__init__()
        self.num_classes = num_classes
        self.resnet = _build_backbone(backbone, in_channels)
        c1, c2, c3, c4 = (info["num_chs"] for info in self.resnet.feature_info[1:5])
        self.rfb2_1 = ReceptiveFieldBlock(c2, channels)
        self.rfb3_1 = ReceptiveFieldBlock(c3, channels)
        self.rfb4_1 = ReceptiveFieldBlock(c4, channels)
        self.ParDec = PartialDecoder(channels, num_classes)
        self.edge_features = nn.Sequential(
            BasicConv2d(c1, decoder_width, 1),
            BasicConv2d(decoder_width, decoder_width, 3, padding=1),
            BasicConv2d(decoder_width, decoder_width, 3, padding=1),
        )
        self.edge_head = BasicConv2d(decoder_width, 1, 3, padding=1)
        self.ra4 = ReverseAttentionStage(c4, 4 * decoder_width, decoder_width, num_classes, kernel=5, depth=3)
        self.ra3 = ReverseAttentionStage(c3, decoder_width, decoder_width, num_classes, kernel=3, depth=2)
        self.ra2 = ReverseAttentionStage(c2, decoder_width, decoder_width, num_classes, kernel=3, depth=2)

    def backbone_features(self, image):
        """The low-level (1/4) and three high-level (1/8, 1/16, 1/32) backbone features."""
        r = self.resnet
        x = r.maxpool(r.act1(r.bn1(r.conv1(image))))
        x1 = r.layer1(x)
        x2 = r.layer2(x1)
        x3 = r.layer3(x2)
        return x1, x2, x3, r.layer4(x3)

    def _coarse_maps(self, image):
        """S_g (1/8), the refined maps at 1/32, 1/16, 1/8, and the edge features e_att (1/4)."""
        check_input_size(image, INPUT_MULTIPLE, type(self).__name__)
        x1, x2, x3, x4 = self.backbone_features(image)
        edge_features = self.edge_features(x1)
        global_map = self.ParDec(self.rfb4_1(x4), self.rfb3_1(x3), self.rfb2_1(x2))
        map4 = self.ra4(x4, _resize(global_map, 1 / 4), _resize(edge_features, 1 / 8))
        map3 = self.ra3(x3, _resize(map4, 2), _resize(edge_features, 1 / 4))
        map2 = self.ra2(x2, _resize(map3, 2), _resize(edge_features, 1 / 2))
        return global_map, map4, map3, map2, edge_features

    def side_outputs(self, image):
        """All five maps at input size: (lateral_map_5, _4, _3, _2, edge_map), logits."""
        global_map, map4, map3, map2, edge_features = self._coarse_maps(image)
        edge_map = _resize(self.edge_head(edge_features), 4)
        return _resize(global_map, 8), _resize(map4, 32), _resize(map3, 16), _resize(map2, 8), edge_map

    def forward(self, image):
        if self.training:
            return self.side_outputs(image)
        return _resize(self._coarse_maps(image)[3], 8)  # lateral_map_2 only: serving skips the other heads


def infnet_slim(in_channels=1, num_classes=1, channels=16, decoder_width=16) -> InfNet:
    """The same Inf-Net on a thin Res2Net (one bottleneck per stage, quarter widths) for CPU training."""
    return InfNet(in_channels, num_classes, SLIM_BACKBONE, channels, decoder_width)


def _build_backbone(name: str, in_channels: int) -> ResNet:
    if name == SLIM_BACKBONE:
        return ResNet(
            block=Bottle2neck, base_width=26, block_args=dict(scale=4), in_chans=in_channels, num_classes=0,
            **SLIM_BACKBONE_SPEC,
        )
    model = timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=0)
    if not all(hasattr(model, part) for part in ("conv1", "bn1", "act1", "maxpool", "layer4")):
        raise ValueError(f"Inf-Net needs a timm ResNet-family backbone (res2net*, resnet*), got {name!r}")
    return model


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    # Bilinear with align_corners=False, as the published F.interpolate calls.
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class DoubleConv(nn.Module):
    """(3x3 conv -> BN -> ReLU) x 2, the published multi-class UNet's block."""

    def __init__(self, in_ch, out_ch, mid_ch=None):
        super().__init__()
        mid_ch = mid_ch or out_ch
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1), nn.BatchNorm2d(mid_ch), nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class InfNetMultiClass(nn.Module):
    """Multi-class Inf-Net (Sec. III-F, Fig. 5): a UNet-like FCN fed the CT slice and the binary
    infection probability of (Semi-)Inf-Net, giving background / GGO / consolidation logits.

    The published code (``InfNet_UNet.py``) is a UNet with bilinear up-sampling, widths 64-128-256-512-
    (1024 / 2), batch norm, fed 6 channels (RGB image + the prior repeated 3x). Here the slice and the
    prior have one channel each (``in_channels=2``); ``width`` scales every stage (64 = published).
    Returns (N, num_classes, H, W) logits in train and eval mode (no side outputs); H and W must be
    multiples of 16. The published training applies a per-channel sigmoid + BCE to one-hot labels; this
    project's task reads the output with a softmax (background / GGO / consolidation).
    """

    def __init__(self, in_channels=2, num_classes=3, width=64):
        super().__init__()
        widths = [width * 2**level for level in range(5)]
        widths[-1] //= 2  # bilinear up-sampling: the bottom keeps the width of the level above
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(4))
        self.up = nn.ModuleList()
        ch = widths[-1]
        for level in (3, 2, 1, 0):
            skip = widths[level]
            out = widths[level - 1] if level > 0 else widths[0]
            self.up.append(DoubleConv(ch + skip, out, (ch + skip) // 2))
            ch = out
        self.outc = nn.Conv2d(ch, num_classes, 1)

    def forward(self, image_and_prior):
        check_input_size(image_and_prior, UNET_INPUT_MULTIPLE, type(self).__name__)
        skips = [self.inc(image_and_prior)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = up(torch.cat([skips.pop(), x], dim=1))
        return self.outc(x)


def infnet_multiclass(in_channels=2, num_classes=3, width=64) -> InfNetMultiClass:
    """Registry entry for the multi-class model (``width=16`` is a CPU-sized variant)."""
    return InfNetMultiClass(in_channels, num_classes, width)
