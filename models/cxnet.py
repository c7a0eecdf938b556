"""COVID-CXNet (Haghanifar et al.): the paper's base CNN and its DenseNet-121 (CheXNet) classifier.

Both take one input, the (original, CLAHE, BEASF) three-channel image of ``core.enhance.cxnet_channels``,
and return logits: the paper's sigmoid / softmax output layer is left to the loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import DenseNet

CONV_LAYERS = 5
CONV_FILTERS = 32
CONV_KERNEL = 3
HIDDEN_UNITS = 10


class CovidCxNetBase(nn.Module):
    """Sec. 4.1: five 3x3 convolutions of 32 filters with ReLU (no BN, no pooling), flatten, FC 10-10-out.

    The paper gives no stride or padding. The authors' released Keras code uses stride 2 with 'valid'
    padding, which keeps the flatten small (32 x 6 x 6 at 224 px, 49,539 parameters in all); ``stride=1``
    also fits the text, but then the first FC layer alone holds 14.65M of 14.69M parameters at 224 px.
    (That code's first kernel is 5x5; the paper's 3x3 is kept for all five.)
    """

    def __init__(self, in_chans: int = 3, input_size: int = 224, num_outputs: int = 1, stride: int = 2):
        super().__init__()
        layers, channels, size = [], in_chans, input_size
        for _ in range(CONV_LAYERS):
            layers += [nn.Conv2d(channels, CONV_FILTERS, CONV_KERNEL, stride), nn.ReLU()]
            channels, size = CONV_FILTERS, (size - CONV_KERNEL) // stride + 1
            if size < 1:
                raise ValueError(f"input_size {input_size} is too small for {CONV_LAYERS} convs at stride {stride}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(CONV_FILTERS * size * size, HIDDEN_UNITS), nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, HIDDEN_UNITS), nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, num_outputs),
        )

    @property
    def gradcam_layer(self) -> nn.Module:
        """ReLU of the last convolution (the paper's Grad-CAM hooks the last convolutional layer)."""
        return self.features[-1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


class CovidCxNet(nn.Module):
    """Sec. 4.3: DenseNet-121 features -> ReLU -> global average pool -> FC 10 -> dropout 0.2 -> FC out.

    ``features`` keeps torchvision's name and layout so a CheXNet checkpoint loads onto ``features.*``
    (``training.chexnet.load_chexnet``). The paper does not name the FC-10 activation; the authors'
    code uses ReLU. ``growth_rate``, ``block_config`` and ``num_init_features`` default to DenseNet-121
    (~7M parameters in all, as the paper states) and exist so tests and CPU runs can use a slimmer net.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_outputs: int = 1,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        dropout: float = 0.2,
    ):
        super().__init__()
        # DenseNet rather than densenet121(): the latter fixes these three arguments.
        self.features = DenseNet(growth_rate, tuple(block_config), num_init_features).features
        if in_chans != 3:
            self.features.conv0 = nn.Conv2d(in_chans, num_init_features, 7, 2, 3, bias=False)
        # Not in place: Grad-CAM hooks this module's output and must see it unmodified.
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Linear(self.features.norm5.num_features, HIDDEN_UNITS), nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN_UNITS, num_outputs),
        )

    @property
    def gradcam_layer(self) -> nn.Module:
        """The rectified last DenseNet feature map (what the pool sees), CheXNet's CAM layer."""
        return self.relu

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.relu(self.features(image))).flatten(1))
