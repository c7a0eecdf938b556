"""VGG16 with batch norm (torchvision ``vgg16_bn`` layout) and attention in ``none|mask|cbam``.

Layout: 13 bias-free 3x3 convolutions (padding 1) in five stages of 2-2-3-3-3 convolutions with
``width * (1, 2, 4, 8, 8)`` channels (64-128-256-512-512 at the default ``width=64``), each stage
closed by a 2x2/stride-2 max pool; then torchvision's head: adaptive average pool to 7x7 and three
fully connected layers ``25088 -> hidden -> hidden -> num_classes`` with ReLU and dropout.
``hidden`` defaults to ``64 * width`` (4096 at width 64, torchvision's head; the parameter count then
matches the paper's Table 3, 134.29 M for 3 input channels and 5 classes); pass a small ``hidden``
for a lighter head.

Mask attention (Eq. 1), the plain VGG block of Fig. 5(a): every convolution is a
``MaskAttentionConv``, ``ReLU(BN(conv(I)) * P(M; 3, 1, 1))``. The max pools move the map with the
same 2x2/stride-2 average pooling (``pool_like``) but do not rescale the features: a max pool has
no activation to put MA in front of, and a feature that is zero where its map is zero stays zero
through a max over such features, which are all >= 0 after ReLU. With ``attention="cbam"`` a CBAM
module follows the last convolution of each stage (before its max pool). The convolutions are
bias-free (the paper's "unbiased convolutional layer"; BN's shift replaces the bias), so the
network has 4,224 parameters fewer than torchvision's ``vgg16_bn``.
"""

from __future__ import annotations

from torch import nn

from .cbam import CBAM
from .mask_attention import MaskAttentionConv, pool_like
from .resnet import ATTENTIONS, _init_weights

VGG16_DEPTHS = (2, 2, 3, 3, 3)


class VGGStage(nn.Module):
    """``depth`` conv-BN-[MA]-ReLU blocks, optional CBAM, 2x2/stride-2 max pool."""

    def __init__(self, in_ch, out_ch, depth, attention="none"):
        super().__init__()
        use_mask = attention == "mask"
        self.convs = nn.ModuleList(
            MaskAttentionConv(in_ch if i == 0 else out_ch, out_ch, 3, 1, 1, use_mask=use_mask) for i in range(depth)
        )
        self.cbam = CBAM(out_ch) if attention == "cbam" else nn.Identity()
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x, mask):
        for conv in self.convs:
            x, mask = conv(x, mask)
        x = self.cbam(x)
        return self.pool(x), pool_like(mask, self.pool)


class MaskAttentionVGG(nn.Module):
    def __init__(
        self,
        depths=VGG16_DEPTHS,
        num_classes=5,
        in_channels=1,
        attention="mask",
        width=64,
        hidden=None,
        dropout=0.5,
    ):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        hidden = 64 * width if hidden is None else hidden
        stages, in_ch = [], in_channels
        for index, depth in enumerate(depths):
            out_ch = width * min(2**index, 8)
            stages.append(VGGStage(in_ch, out_ch, depth, attention))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.feature_channels = in_ch
        _init_weights(self)
        for module in self.classifier:
            if isinstance(module, nn.Linear):  # torchvision's VGG initialisation of the head
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    @property
    def gradcam_layer(self) -> nn.Module:
        """Activation (ReLU) of the last convolution, before the last max pool (and CBAM, if any)."""
        return self.stages[-1].convs[-1].act

    def forward_features(self, image, mask):
        x = image
        for stage in self.stages:
            x, mask = stage(x, mask)
        return x

    def forward(self, image, mask):
        return self.classifier(self.avgpool(self.forward_features(image, mask)).flatten(1))


def vgg16(**cfg) -> MaskAttentionVGG:
    return MaskAttentionVGG(VGG16_DEPTHS, **cfg)
