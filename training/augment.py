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


def resolution_jitter(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """Down- then up-sample a random subset of the batch, so every class is seen at low resolution.

    Counters the data pack's resolution shortcut (TB images are mostly low resolution).
    """
    if p <= 0:
        return x
    size = x.shape[-1]
    pick = torch.rand(x.shape[0], generator=generator) < p
    if not pick.any():
        return x
    low = int(size * (0.35 + 0.4 * torch.rand(1, generator=generator).item()))
    small = F.interpolate(x[pick], size=(low, low), mode="bilinear", antialias=True, align_corners=False)
    x = x.clone()
    x[pick] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return x


def gamma_jitter(image: torch.Tensor, mask: torch.Tensor, limit: float, generator=None) -> torch.Tensor:
    """Images in [-1, 1]: a random gamma exp(U(-limit, limit)) per image inside the lungs (``mask`` > 0).

    Sources differ in the tone curve their processing applies; drawing it at random keeps it from naming them.
    """
    if limit <= 0:
        return image
    gamma = torch.exp((torch.rand(image.shape[0], 1, 1, 1, generator=generator) * 2 - 1) * limit).to(image.device)
    toned = ((image + 1) / 2).clamp(0, 1).pow(gamma) * 2 - 1
    return torch.where(mask > 0, toned, image)


CLASSIFICATION_AUGMENT = AffineAugment(rotate_degrees=30.0, brightness=0.2, contrast=0.2)


@dataclass(frozen=True)
class HrnetAugment:
    """The UNet + HRNet paper's Table 3 on [0, 1] batches (N, C, H, W), with the mask moved alike.

    x-scale 0.8-1.1 (p 1), rotation +-45 deg (p 1), x-shear +-0.2 (p 0.7); padding and centre crop to
    the input size are implicit (the batch is already square); gamma 0.5-3 (p 1), salt-and-pepper on
    1% of pixels (p 0.3), Gaussian blur with an 11 x 11 kernel (p 0.5), Gaussian noise (p 0.3).
    """

    x_scale: tuple = (0.8, 1.1)
    rotate_degrees: float = 45.0
    shear: float = 0.2
    p_shear: float = 0.7
    gamma: tuple = (0.5, 3.0)
    salt_pepper: float = 0.01
    p_salt_pepper: float = 0.3
    p_blur: float = 0.5
    blur_sigma: float = 1.5
    noise_std: float = 0.03
    p_noise: float = 0.3

    def __call__(self, image, mask=None, generator=None):
        n, device = image.shape[0], image.device

        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=generator, device=device)

        def chance(p):
            return torch.rand(n, generator=generator, device=device) < p

        angle = uniform(-1, 1) * math.radians(self.rotate_degrees)
        sx = uniform(*self.x_scale)
        shear = torch.where(chance(self.p_shear), uniform(-self.shear, self.shear), torch.zeros(n, device=device))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output-to-input map of rotate(angle) . shear_x . scale_x, as affine_grid expects.
        forward = torch.stack([torch.stack([cos * sx, cos * shear - sin, torch.zeros_like(sx)], 1),
                               torch.stack([sin * sx, sin * shear + cos, torch.zeros_like(sx)], 1)], 1)
        full = torch.cat([forward, torch.tensor([0.0, 0.0, 1.0], device=device).expand(n, 1, 3)], 1)
        theta = torch.linalg.inv(full)[:, :2]
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if mask is not None:
            mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return self._photometric(image.clamp(0, 1), uniform, chance), mask

    def _photometric(self, image, uniform, chance):
        shape = (-1, 1, 1, 1)
        image = image ** uniform(*self.gamma).view(shape)
        blurred = _gaussian_blur(image, 11, self.blur_sigma)
        image = torch.where(chance(self.p_blur).view(shape), blurred, image)
        noisy = image + self.noise_std * torch.randn_like(image)
        image = torch.where(chance(self.p_noise).view(shape), noisy, image)
        hits = (torch.rand_like(image) < self.salt_pepper) & chance(self.p_salt_pepper).view(shape)
        salt = (torch.rand_like(image) < 0.5).float()
        return torch.where(hits, salt, image).clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(kernel, device=image.device, dtype=image.dtype) - kernel // 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    channels = image.shape[1]
    horizontal = weights.view(1, 1, 1, kernel).repeat(channels, 1, 1, 1)
    vertical = weights.view(1, 1, kernel, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(image, (kernel // 2,) * 4, mode="reflect")
    return F.conv2d(F.conv2d(padded, horizontal, groups=channels), vertical, groups=channels)


@dataclass(frozen=True)
class CtSliceAugment:
    """CT slices in [0, 1]: MANet's affine moves, then random gamma, blur and noise.

    The pack's CT masks come with CLAHE-enhanced or differently windowed slices while users upload
    lung-window exports or HU; the photometric part keeps the models from learning one exporter's contrast.
    """

    affine: AffineAugment = AffineAugment(rotate_degrees=15.0)
    photometric: HrnetAugment = HrnetAugment(gamma=(0.6, 1.7), p_salt_pepper=0.0, p_blur=0.3, blur_sigma=1.0, noise_std=0.02)

    def __call__(self, image, mask=None, generator=None):
        image, mask = self.affine(image, mask, generator)
        n, device = image.shape[0], image.device

        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=generator, device=device)

        def chance(p):
            return torch.rand(n, generator=generator, device=device) < p

        return self.photometric._photometric(image.clamp(0, 1), uniform, chance), mask


CT_SEGMENTATION_AUGMENT = CtSliceAugment()
