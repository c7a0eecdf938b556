"""3D ResNet34 with the online attention module of the dual-sampling paper (paper 004: Ouyang et al.,
"Dual-Sampling Attention Network for Diagnosis of COVID-19 From Community Acquired Pneumonia",
IEEE TMI 2020, doi:10.1109/TMI.2020.2995508, arXiv:2005.02690).

Backbone (Sec. III-A): the 3D extension of ResNet34 (BasicBlock, 3-4-6-3 blocks; Hara et al., CVPR 2018),
every kernel 3D, trained from scratch. The last residual stage keeps stride 1, so the feature maps
before global average pooling are 1/16 of the input in each dimension (stem 2, max pool 2, stages 2
and 3 stride 2), not 1/32.

Online attention (Sec. III-B, Eq. 1-2): the FC layer's weight w is used as the kernel of a 1x1x1
convolution over the last feature maps f, A = ReLU(conv(f, w)); A is upsampled (trilinear) to the
input size, min-max normalised per sample to [0, 1], and T(A) = sigmoid(alpha (A - beta)) with
alpha = 100, beta = 0.4. The kernel *is* ``fc.weight`` (a view, not a copy and not a second
parameter): the network has exactly the parameters of a plain 3D ResNet34, and the gradient of a
loss on T(A) reaches ``fc.weight`` through the same tensor as the classification loss's. No bias in
the convolution (Eq. 1 has none; a class activation map is the weighted sum of the feature maps).

The paper also says the convolution's parameters "are only updated by the BCE loss"; with one shared
weight the attention loss (L_ex) moves ``fc.weight`` too. The issue asks for the shared weight, which
is what this module does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYERS_34 = (3, 4, 6, 3)  # BasicBlocks per stage (ResNet34)
STAGE_STRIDES = (1, 2, 2, 1)  # the last stage keeps the resolution: features at 1/16
OUTPUT_STRIDE = 16
ATTENTION_EPS = 1e-6  # min-max normalisation of a flat map (all zero after the ReLU) stays at 0


class BasicBlock3d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.shortcut = nn.Identity() if stride == 1 and in_ch == out_ch else nn.Sequential(
            nn.Conv3d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm3d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def soft_mask(attention: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Eq. 2 after the normalisation: per-sample, per-channel min-max to [0, 1], then sigmoid(alpha (A - beta))."""
    flat = attention.flatten(2)
    low = flat.amin(dim=2).view(*attention.shape[:2], 1, 1, 1)
    high = flat.amax(dim=2).view(*attention.shape[:2], 1, 1, 1)
    normalised = (attention - low) / (high - low + ATTENTION_EPS)
    return torch.sigmoid(alpha * (normalised - beta))


class AttentionResNet3d(nn.Module):
    """3D ResNet34 (stride 1 in the last stage), GAP + FC, and the online attention T(A) of Eq. 1-2.

    Args:
        num_classes: FC outputs (1: one logit for P(COVID-19), trained with BCE, as the paper).
        width: channels of the first stage (64 in the paper); the stages have width x (1, 2, 4, 8).
        in_channels: input channels (1: the lung-masked, windowed volume).
        alpha, beta: Eq. 2's sharpness and threshold (100 and 0.4 in the paper).
    """

    def __init__(self, num_classes: int = 1, width: int = 64, in_channels: int = 1, alpha: float = 100.0,
                 beta: float = 0.4):
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.stem = nn.Sequential(nn.Conv3d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm3d(width),
                                  nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        stages, in_ch = [], width
        for stage, (count, stride) in enumerate(zip(LAYERS_34, STAGE_STRIDES)):
            out_ch = width * 2**stage
            blocks = [BasicBlock3d(in_ch, out_ch, stride)] + [BasicBlock3d(out_ch, out_ch) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.feature_channels = in_ch
        _init_weights(self)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last residual block: its output is f, the feature maps the attention module reads."""
        return self.stages[-1][-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f: (N, C, Z/16, Y/16, X/16) (sizes rounded up by the strided convolutions)."""
        return self.stages(self.maxpool(self.stem(x)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3, 4)))

    def raw_attention(self, features: torch.Tensor) -> torch.Tensor:
        """Eq. 1: A = ReLU(conv1x1x1(f, w)), w = ``fc.weight`` itself viewed as (classes, C, 1, 1, 1)."""
        kernel = self.fc.weight.view(*self.fc.weight.shape, 1, 1, 1)
        return F.relu(F.conv3d(features, kernel))

    def attention_map(self, raw: torch.Tensor, size) -> torch.Tensor:
        """Eq. 2: A upsampled (trilinear) to ``size``, min-max normalised per sample, T(A) = sigmoid(alpha (A - beta)).

        Computed in float32 even under autocast: alpha = 100 turns fp16 rounding of A into visible steps.
        """
        with torch.autocast(raw.device.type, enabled=False):
            upsampled = F.interpolate(raw.float(), size=tuple(size), mode="trilinear", align_corners=False)
            return soft_mask(upsampled, self.alpha, self.beta)

    def forward(self, x: torch.Tensor, with_attention: bool = False):
        """Logits (N, classes); with ``with_attention`` the triple of ``forward_with_attention`` (through
        ``forward`` so that a DistributedDataParallel wrapper sees the call)."""
        features = self.features(x)
        if not with_attention:
            return self.classify(features)
        raw = self.raw_attention(features)
        return self.classify(features), raw, self.attention_map(raw, x.shape[2:])

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (N, classes), A (N, classes, Z/16, Y/16, X/16), T(A) (N, classes, Z, Y, X) in [0, 1])."""
        return self(x, with_attention=True)


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def resnet3d34_attention(**cfg) -> AttentionResNet3d:
    return AttentionResNet3d(**cfg)
