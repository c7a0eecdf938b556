"""The UNet + HRNet paper's classifier (Ahmed et al., Sec. 3.4) and its baselines (Table 7), built with timm.

The paper uses an HRNet feature extractor followed by a fully connected classification head, and
compares it with ResNet152, DenseNet121 and EfficientNetB4. timm builds each as "features + FC"
when given ``num_classes``; ``pretrained=False`` always, since nothing can be downloaded here.

Inputs are the single-channel lung-segmented images (``in_chans=1``); outputs are logits (the
paper's binary cross entropy applies the sigmoid).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

# The last feature map before global pooling in each timm family (the layer Grad-CAM should hook).
GRADCAM_LAYERS = {
    "hrnet": "final_layer",      # 1x1 conv 1024 -> 2048 + BN + ReLU on the fused branches, 1/32 scale
    "resnet": "layer4",          # last residual stage
    "densenet": "features.norm5",  # final BN + ReLU of the dense blocks
    "efficientnet": "bn2",       # BN + SiLU after conv_head
}


class TimmClassifier(nn.Module):
    """A timm classifier held as ``.net``, with one-input ``forward`` and a ``gradcam_layer``."""

    def __init__(self, variant: str, gradcam_layer_name: str, num_classes: int = 1, in_chans: int = 1):
        super().__init__()
        self.variant = variant
        self.net = timm.create_model(variant, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        self._gradcam_layer_name = gradcam_layer_name

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.net.get_submodule(self._gradcam_layer_name)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def hrnet(variant: str = "hrnet_w18", num_classes: int = 1, in_chans: int = 1) -> TimmClassifier:
    """HRNet feature extractor + fully connected head; the paper names no width, so W18 unless ``variant`` says.

    timm's ``HighResolutionNet`` ends in HRNet's classification head: ``incre_modules`` (bottlenecks
    raising the four branches to 128/256/512/1024 channels), ``downsamp_modules`` (strided 3x3 convs
    fusing them high-to-low), ``final_layer`` (1x1 conv to 2048 + BN + ReLU) and ``global_pool``. Those
    belong to the feature extractor here. The fully connected head is ``net.classifier`` alone, a
    ``Linear(2048, num_classes)``: the part ``num_classes`` replaces. (The paper's Fig. 11 details its
    head, chosen by trial and error; the text keeps only "fully connected layers", so one FC is used.)
    """
    return TimmClassifier(variant, GRADCAM_LAYERS["hrnet"], num_classes, in_chans)


def timm_resnet152(num_classes: int = 1, in_chans: int = 1) -> TimmClassifier:
    """Baseline ResNet152 (Table 7: 94.50% accuracy)."""
    return TimmClassifier("resnet152", GRADCAM_LAYERS["resnet"], num_classes, in_chans)


def timm_densenet121(num_classes: int = 1, in_chans: int = 1) -> TimmClassifier:
    """Baseline DenseNet121 (Table 7: 93.40% accuracy)."""
    return TimmClassifier("densenet121", GRADCAM_LAYERS["densenet"], num_classes, in_chans)


def timm_efficientnet_b4(num_classes: int = 1, in_chans: int = 1) -> TimmClassifier:
    """Baseline EfficientNetB4 (Table 7: 97.56% accuracy)."""
    return TimmClassifier("efficientnet_b4", GRADCAM_LAYERS["efficientnet"], num_classes, in_chans)
