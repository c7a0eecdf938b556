"""Inception-v3 (torchvision ``Inception3`` layout) with attention in ``none|mask|cbam``.

Layout, as torchvision: stem ``Conv2d_1a_3x3`` (3x3/2), ``Conv2d_2a_3x3`` (3x3), ``Conv2d_2b_3x3``
(3x3, pad 1), max pool 3/2, ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3`` (3x3), max pool 3/2, then
``Mixed_5b..5d`` (InceptionA), ``Mixed_6a`` (B), ``Mixed_6b..6e`` (C), ``Mixed_7a`` (D),
``Mixed_7b..7c`` (E), global average pool, dropout 0.5, FC. The auxiliary classifier is omitted
(it only adds a training loss; the paper's Table 3 count, 21.80 M parameters for 3 input channels
and 5 classes, is the network without it, and so is this one at ``width=64``). ``width`` scales every
channel count by ``width / 64`` (64: torchvision's channels). BN uses torchvision's eps = 1e-3.
Smallest input: 75x75 (as torchvision); 75 px gives a 1x1 map after ``Mixed_7a``.

Mask attention (Eq. 1) here:
* stem: every convolution is a ``MaskAttentionConv`` (``ReLU(BN(conv) * P(M; k, s, p))``); the max
  pools move the map with ``pool_like`` and do not rescale features (as in ``vgg.py``).
* Inception modules (Fig. 5(d); the paper: "the spatial attention map in MA is simply calculated
  based on the largest receptive field of features in all channels"). Read as follows. Every
  path from the module input to an output channel is a chain of convolutions/poolings (InceptionE's
  split branches give two paths each). The effective receptive field of a chain is computed per
  axis from its kernels and strides, ``rf = 1 + sum (k_i - 1) * prod_{j<i} s_j``, and paths are
  ranked by its area ``rf_h * rf_w``; ties go to the first path in torchvision's branch order. The
  module's output map ``M_out`` is ``M_in`` pushed through the winning chain with ``P`` (each
  layer's own kernel, stride and padding). Every branch's final conv-BN output is multiplied by
  ``M_out`` before its ReLU; convolutions inside a branch are plain conv-BN-ReLU (not rescaled);
  a max-pool branch (InceptionB/D) is passed through unscaled. ``M_out`` is returned.
  Winning chains: A: 1x1 -> 5x5/p2 (ties with 1x1-3x3-3x3, first wins); B: 1x1 -> 3x3/p1 -> 3x3/2;
  C: 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 (13x13); D: 1x1 -> 1x7 -> 7x1 -> 3x3/2 (9x9);
  E: 1x1 -> 3x3/p1 -> 1x3/p(0,1) (3x5, ties with the 3x1 head's 5x3, first wins).
  Asymmetric kernels pool the map with the same (1, 7)/(7, 1) kernels and (0, 3)/(3, 0) paddings,
  so every branch output and ``M_out`` have the same spatial size.
* ``attention="cbam"``: a CBAM module on each Inception module's concatenated output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .cbam import CBAM
from .mask_attention import MaskAttentionConv, pool_like, pool_mask
from .resnet import ATTENTIONS, _init_weights


def _spec(layer: nn.Module):
    op = layer.conv if isinstance(layer, MaskAttentionConv) else layer
    stride = op.stride if op.stride is not None else op.kernel_size
    return _pair(op.kernel_size), _pair(stride), _pair(op.padding)


def receptive_field(chain) -> tuple[int, int]:
    """Effective receptive field (height, width) of a chain of ``(kernel, stride, padding)`` specs."""
    rf, jump = [1, 1], [1, 1]
    for kernel, stride, _ in chain:
        for axis in range(2):
            rf[axis] += (kernel[axis] - 1) * jump[axis]
            jump[axis] *= stride[axis]
    return rf[0], rf[1]


def push_map(mask: torch.Tensor, chain) -> torch.Tensor:
    for kernel, stride, padding in chain:
        mask = pool_mask(mask, kernel, stride, padding)
    return mask


def _apply(layer, x, mask):
    """Pooling layers move the map without rescaling features; other layers take ``(x, mask)``."""
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return layer(x), pool_like(mask, layer)
    return layer(x, mask)


class Branch(nn.Module):
    """A chain of plain conv-BN-ReLU / pooling layers, then parallel heads (conv-BN, no activation).

    Without heads (max-pool branches) the chain's output is the branch output.
    """

    def __init__(self, layers=(), heads=()):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.heads = nn.ModuleList(heads)

    def chains(self) -> list[list]:
        trunk = [_spec(layer) for layer in self.layers]
        return [trunk + [_spec(head)] for head in self.heads] if len(self.heads) else [trunk]

    def forward(self, x, mask) -> list[torch.Tensor]:
        for layer in self.layers:
            x, mask = _apply(layer, x, mask)
        if not len(self.heads):
            return [x]
        return [head(x, mask)[0] for head in self.heads]


class InceptionModule(nn.Module):
    def __init__(self, branches, attention="none"):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.use_mask = attention == "mask"
        chains = [chain for branch in self.branches for chain in branch.chains()]
        areas = [h * w for h, w in map(receptive_field, chains)]
        self.map_chain = chains[areas.index(max(areas))]  # plain data: no parameters, no buffers
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = None  # set by the builder (a max-pool branch passes its input channels)
        self.cbam = nn.Identity()
        self.out = nn.Identity()  # a plain-tensor output, for forward hooks and Grad-CAM

    def forward(self, x, mask):
        m_out = push_map(mask, self.map_chain)
        outs = []
        for branch in self.branches:
            pre = branch(x, mask)
            if len(branch.heads):
                outs += [self.relu(p * m_out if self.use_mask else p) for p in pre]
            else:
                outs += pre
        return self.out(self.cbam(torch.cat(outs, 1))), m_out


class _Builder:
    """Channel scaling and torchvision's BasicConv2d (bias-free conv, BN eps 1e-3)."""

    def __init__(self, width: int):
        self.scale = width / 64

    def c(self, channels: int) -> int:
        return max(1, round(channels * self.scale))

    @staticmethod
    def conv(in_ch, out_ch, kernel, stride=1, padding=0, use_mask=False, activation=True):
        block = MaskAttentionConv(in_ch, out_ch, kernel, stride, padding, use_mask=use_mask, activation=activation)
        block.bn.eps = 1e-3
        return block

    def head(self, in_ch, out_ch, kernel, stride=1, padding=0):
        return self.conv(in_ch, out_ch, kernel, stride, padding, activation=False)

    def module(self, branches, in_ch, attention):
        module = InceptionModule(branches, attention)
        out = sum(sum(h.conv.out_channels for h in b.heads) if len(b.heads) else in_ch for b in module.branches)
        module.out_channels = out
        if attention == "cbam":
            module.cbam = CBAM(out)
        return module, out

    def a(self, in_ch, pool_features, attention):
        c, conv, head = self.c, self.conv, self.head
        return self.module([
            Branch(heads=[head(in_ch, c(64), 1)]),
            Branch([conv(in_ch, c(48), 1)], [head(c(48), c(64), 5, padding=2)]),
            Branch([conv(in_ch, c(64), 1), conv(c(64), c(96), 3, padding=1)], [head(c(96), c(96), 3, padding=1)]),
            Branch([nn.AvgPool2d(3, 1, 1)], [head(in_ch, c(pool_features), 1)]),
        ], in_ch, attention)

    def b(self, in_ch, attention):
        c, conv, head = self.c, self.conv, self.head
        return self.module([
            Branch(heads=[head(in_ch, c(384), 3, stride=2)]),
            Branch([conv(in_ch, c(64), 1), conv(c(64), c(96), 3, padding=1)], [head(c(96), c(96), 3, stride=2)]),
            Branch([nn.MaxPool2d(3, 2)]),
        ], in_ch, attention)

    def c_module(self, in_ch, c7, attention):
        c, conv, head = self.c, self.conv, self.head
        c7 = c(c7)
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        return self.module([
            Branch(heads=[head(in_ch, c(192), 1)]),
            Branch([conv(in_ch, c7, 1), conv(c7, c7, **row)], [head(c7, c(192), **col)]),
            Branch(
                [conv(in_ch, c7, 1), conv(c7, c7, **col), conv(c7, c7, **row), conv(c7, c7, **col)],
                [head(c7, c(192), **row)],
            ),
            Branch([nn.AvgPool2d(3, 1, 1)], [head(in_ch, c(192), 1)]),
        ], in_ch, attention)

    def d(self, in_ch, attention):
        c, conv, head = self.c, self.conv, self.head
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        return self.module([
            Branch([conv(in_ch, c(192), 1)], [head(c(192), c(320), 3, stride=2)]),
            Branch(
                [conv(in_ch, c(192), 1), conv(c(192), c(192), **row), conv(c(192), c(192), **col)],
                [head(c(192), c(192), 3, stride=2)],
            ),
            Branch([nn.MaxPool2d(3, 2)]),
        ], in_ch, attention)

    def e(self, in_ch, attention):
        c, conv, head = self.c, self.conv, self.head
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        return self.module([
            Branch(heads=[head(in_ch, c(320), 1)]),
            Branch([conv(in_ch, c(384), 1)], [head(c(384), c(384), **row), head(c(384), c(384), **col)]),
            Branch(
                [conv(in_ch, c(448), 1), conv(c(448), c(384), 3, padding=1)],
                [head(c(384), c(384), **row), head(c(384), c(384), **col)],
            ),
            Branch([nn.AvgPool2d(3, 1, 1)], [head(in_ch, c(192), 1)]),
        ], in_ch, attention)


MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
         "Mixed_7a", "Mixed_7b", "Mixed_7c")


class MaskAttentionInception3(nn.Module):
    def __init__(self, num_classes=5, in_channels=1, attention="mask", width=64, dropout=0.5):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        build = _Builder(width)
        c, use_mask = build.c, attention == "mask"
        self.Conv2d_1a_3x3 = build.conv(in_channels, c(32), 3, 2, use_mask=use_mask)
        self.Conv2d_2a_3x3 = build.conv(c(32), c(32), 3, use_mask=use_mask)
        self.Conv2d_2b_3x3 = build.conv(c(32), c(64), 3, padding=1, use_mask=use_mask)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = build.conv(c(64), c(80), 1, use_mask=use_mask)
        self.Conv2d_4a_3x3 = build.conv(c(80), c(192), 3, use_mask=use_mask)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        ch = c(192)
        self.Mixed_5b, ch = build.a(ch, 32, attention)
        self.Mixed_5c, ch = build.a(ch, 64, attention)
        self.Mixed_5d, ch = build.a(ch, 64, attention)
        self.Mixed_6a, ch = build.b(ch, attention)
        self.Mixed_6b, ch = build.c_module(ch, 128, attention)
        self.Mixed_6c, ch = build.c_module(ch, 160, attention)
        self.Mixed_6d, ch = build.c_module(ch, 160, attention)
        self.Mixed_6e, ch = build.c_module(ch, 192, attention)
        self.Mixed_7a, ch = build.d(ch, attention)
        self.Mixed_7b, ch = build.e(ch, attention)
        self.Mixed_7c, ch = build.e(ch, attention)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)
        self.feature_channels = ch
        _init_weights(self)

    @property
    def gradcam_layer(self) -> nn.Module:
        """Output of the last Inception module (``Mixed_7c``), a plain tensor."""
        return self.Mixed_7c.out

    def forward_features(self, image, mask):
        x = image
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", *MIXED):
            x, mask = _apply(getattr(self, name), x, mask)
        return x

    def forward(self, image, mask):
        return self.fc(self.dropout(self.avgpool(self.forward_features(image, mask)).flatten(1)))


def inception_v3(**cfg) -> MaskAttentionInception3:
    return MaskAttentionInception3(**cfg)
