"""Batch augmentations on tensors (CPU or GPU), applied identically to an image and its mask.

MANet: each with p = 0.5: shift +-6.25%, scale +-20%, rotation (+-10 deg for segmentation, +-30 deg
for classification), and for classification brightness/contrast +-20%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineAugment:
    shift: float = 0.0625
    scale: float = 0.2
    rotate_degrees: float = 10.0
    brightness: float = 0.0
    contrast: float = 0.0
    p: float = 0.5

    def _draw(self, n, limit, generator, device):
        value = (torch.rand(n, generator=generator, device=device) * 2 - 1) * limit
        keep = torch.rand(n, generator=generator, device=device) < self.p
        return torch.where(keep, value, torch.zeros_like(value))

    def __call__(self, image, mask=None, generator=None, background: float = 0.0):
        """image (N, C, H, W); mask (N, 1, H, W) or None. Pixels moved in from outside take ``background``."""
        n, device = image.shape[0], image.device
        angle = self._draw(n, math.radians(self.rotate_degrees), generator, device)
        scale = 1 + self._draw(n, self.scale, generator, device)
        tx = self._draw(n, 2 * self.shift, generator, device)  # grid units span 2 per image side
        ty = self._draw(n, 2 * self.shift, generator, device)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        image = F.grid_sample(image - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background
        if mask is not None:
            mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if self.brightness or self.contrast:
            image = self._photometric(image, mask, generator)
        return image, mask

    def _photometric(self, image, mask, generator):
        n = image.shape[0]
        shape = (n, 1, 1, 1)
        brightness = self._draw(n, self.brightness, generator, image.device).view(shape)
        contrast = 1 + self._draw(n, self.contrast, generator, image.device).view(shape)
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        out = ((image - mean) * contrast + mean + brightness * 2).clamp(-1, 1)  # images live in [-1, 1]
        return torch.where(mask > 0, out, image) if mask is not None else out


SEGMENTATION_AUGMENT = AffineAugment(rotate_degrees=10.0)
CLASSIFICATION_AUGMENT = AffineAugment(rotate_degrees=30.0, brightness=0.2, contrast=0.2)
