"""Lung segmentation networks: the UNet of the HRNet paper (Ahmed et al., Table 4) and MANet's ResUNet
(Fig. 4: the same U shape with a residual connection in every convolution block).

Both return one channel of logits; apply a sigmoid for the lung probability.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Module):
    """Two 3x3 convolutions with ReLU (Table 4's ``Conv2d_Na`` / ``Conv2d_Nb``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.body(x)


class ResidualConv(nn.Module):
    """ResUNet block (Fig. 4b): conv-BN-ReLU-conv-BN plus a 1x1 projected shortcut, then ReLU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class UNet(nn.Module):
    """Encoder-decoder with max-pool down, 2x2 transposed-conv up and skip concatenation.

    ``widths=(32, 64, 128, 256, 512)`` and ``DoubleConv`` give exactly Table 4 of the HRNet paper.
    """

    def __init__(self, in_channels=1, widths=(32, 64, 128, 256, 512), block=DoubleConv):
        super().__init__()
        self.down = nn.ModuleList()
        ch = in_channels
        for width in widths:
            self.down.append(block(ch, width))
            ch = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(ch, width, 2, stride=2))
            self.merge.append(block(2 * width, width))
            ch = width
        self.head = nn.Conv2d(ch, 1, 1)
        self.depth = len(widths) - 1
        _kaiming_init(self)

    def forward(self, x):
        if not torch.jit.is_tracing() and (x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth):
            raise ValueError(f"input sides must be multiples of {2 ** self.depth}, got {tuple(x.shape[-2:])}")
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def ResUNet(in_channels=1, widths=(32, 64, 128, 256, 512)) -> UNet:
    """MANet's stage-1 segmenter: the UNet layout with residual blocks."""
    return UNet(in_channels, widths, block=ResidualConv)


def _kaiming_init(model: nn.Module) -> None:
    # MANet: Kaiming-normal convolutions, batch-norm weight 1 and bias 0.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
