"""ResNet34/50 with three attention options: ``none`` (plain), ``mask`` (MANet's MA), ``cbam``.

Every forward takes ``(image, mask)``; plain and CBAM networks ignore the mask (they still see the
segmented image, as in the paper), so one training and serving path fits all variants.
"""

from __future__ import annotations

from torch import nn

from .cbam import CBAM
from .mask_attention import MaskAttentionConv, pool_like

ATTENTIONS = ("none", "mask", "cbam")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch, width, stride=1, attention="none"):
        super().__init__()
        use_mask = attention == "mask"
        out_ch = width * self.expansion
        self.conv1 = MaskAttentionConv(in_ch, width, 3, stride, 1, use_mask=use_mask)
        self.conv2 = MaskAttentionConv(width, out_ch, 3, 1, 1, use_mask=use_mask, activation=False)
        self.cbam = CBAM(out_ch) if attention == "cbam" else nn.Identity()
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, mask):
        out, mask = self.conv1(x, mask)
        out, mask = self.conv2(out, mask)
        # MA scales the deep path only. Scaling the fused sum instead would shrink the identity path
        # by the map at every block (0.5 after one block is 0.5**16 after sixteen), which stalls training.
        return self.relu(self.cbam(out) + self.shortcut(x)), mask


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, width, stride=1, attention="none"):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = MaskAttentionConv(in_ch, width, 1, use_mask=False)
        # MA once, where the receptive field grows (1x1 convolutions leave it as it is).
        self.conv2 = MaskAttentionConv(width, width, 3, stride, 1, use_mask=attention == "mask")
        self.conv3 = MaskAttentionConv(width, out_ch, 1, use_mask=False, activation=False)
        self.cbam = CBAM(out_ch) if attention == "cbam" else nn.Identity()
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, mask):
        out, mask = self.conv1(x, mask)
        out, mask = self.conv2(out, mask)
        out, mask = self.conv3(out, mask)
        return self.relu(self.cbam(out) + self.shortcut(x)), mask


def _shortcut(in_ch, out_ch, stride):
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class MaskAttentionResNet(nn.Module):
    """torchvision's ResNet layout (7x7 stem, max pool, four stages, global average pool, FC)."""

    def __init__(self, block, layers, num_classes=5, in_channels=1, attention="mask", width=64):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        self.stem = MaskAttentionConv(in_channels, width, 7, 2, 3, use_mask=attention == "mask")
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, in_ch = [], width
        for stage, count in enumerate(layers):
            stage_width = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(in_ch, stage_width, stride, attention))
                in_ch = stage_width * block.expansion
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.feature_channels = in_ch
        _init_weights(self)

    @property
    def gradcam_layer(self) -> nn.Module:
        """Output of the last residual block, the layer of the paper's Grad-CAM figure (Fig. 9)."""
        return self.blocks[-1].relu

    def forward_features(self, image, mask):
        x, mask = self.stem(image, mask)
        x, mask = self.maxpool(x), pool_like(mask, self.maxpool)
        for block in self.blocks:
            x, mask = block(x, mask)
        return x

    def forward(self, image, mask):
        return self.fc(self.pool(self.forward_features(image, mask)).flatten(1))


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def resnet34(**cfg) -> MaskAttentionResNet:
    return MaskAttentionResNet(BasicBlock, [3, 4, 6, 3], **cfg)


def resnet50(**cfg) -> MaskAttentionResNet:
    return MaskAttentionResNet(Bottleneck, [3, 4, 6, 3], **cfg)
