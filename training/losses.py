"""Segmentation losses of the papers. All take logits (N, 1, H, W) and targets in {0, 1}."""

from __future__ import annotations

import torch

EPS = 1e-6


def dice_coefficient_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """HRNet paper: 1 - 2 sum(p g) / (sum p^2 + sum g^2), per image, averaged over the batch."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).float()
    dice = (2 * (prob * target).sum(1) + EPS) / ((prob**2).sum(1) + (target**2).sum(1) + EPS)
    return 1 - dice.mean()


def generalised_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised dice (Sudre et al. 2017) over the two classes lung / background, as MANet uses.

    Each class is weighted by the inverse square of its volume, so the smaller class counts as much
    as the larger one.
    """
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).float()
    probs = torch.stack([prob, 1 - prob], dim=1)  # (N, 2, P)
    targets = torch.stack([target, 1 - target], dim=1)
    weights = 1.0 / (targets.sum(2) ** 2 + EPS)
    intersection = (weights * (probs * targets).sum(2)).sum(1)
    union = (weights * (probs + targets).sum(2)).sum(1)
    return 1 - (2 * intersection / (union + EPS)).mean()


SEGMENTATION_LOSSES = {"dice": dice_coefficient_loss, "generalised_dice": generalised_dice_loss}
