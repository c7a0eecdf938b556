"""Segmentation losses of the papers. All take logits (N, 1, H, W) and targets in {0, 1}.

Inf-Net (Fan et al., IEEE TMI 2020, doi:10.1109/TMI.2020.2996645) adds the "structure" loss on every
deep-supervision side output, a BCE on the edge map, and (here) cross-entropy + soft Dice for its
multi-class GGO / consolidation head, whose logits are (N, C, H, W) and targets class indices (N, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


# ---------------------------------------------------------------- Inf-Net
STRUCTURE_WINDOW = 31  # avg-pool window of the weight map (public Inf-Net / PraNet / F3Net code)
STRUCTURE_GAIN = 5.0


def structure_weights(mask: torch.Tensor) -> torch.Tensor:
    """w = 1 + 5 |avgpool31(G) - G| (Inf-Net Eq. 5's weighting): pixels near a boundary weigh up to 6.

    Zero padding counts in the average (PyTorch's default, as in the public code), so mask pixels near
    the image border weigh a little more too.
    """
    local_mean = F.avg_pool2d(mask, STRUCTURE_WINDOW, stride=1, padding=STRUCTURE_WINDOW // 2)
    return 1 + STRUCTURE_GAIN * (local_mean - mask).abs()


def structure_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Inf-Net Eq. 5: L_seg = L_IoU^w + lambda L_BCE^w with lambda = 1, averaged over images.

    L_BCE^w = sum(w * bce) / sum(w) per image; L_IoU^w = 1 - (sum(w p g) + 1) / (sum(w (p + g)) - sum(w p g) + 1).
    The public ``joint_loss`` passes ``reduce='none'`` to ``binary_cross_entropy_with_logits``, a legacy
    flag that means "reduce", so its BCE term is in fact unweighted; this is the weighted BCE the paper
    (and F3Net, where the loss comes from) defines.
    """
    target = target.float()
    weights = structure_weights(target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weighted_bce = (weights * bce).sum(dim=(2, 3)) / weights.sum(dim=(2, 3))
    prob = torch.sigmoid(logits)
    inter = (weights * prob * target).sum(dim=(2, 3))
    union = (weights * (prob + target)).sum(dim=(2, 3))
    weighted_iou = 1 - (inter + 1) / (union - inter + 1)
    return (weighted_bce + weighted_iou).mean()


def edge_targets(mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Edge map of a mask (N, 1, H, W) in {0, 1} (any label > 0 counts): the morphological gradient.

    dilation - erosion with a (2 width + 1)^2 square, computed with max-pooling; 1 on a band 2 width
    pixels wide across the boundary, 0 elsewhere. The image border is not an edge: pooling pads with
    -inf, so a mask touching the border keeps its interior there.
    """
    binary = (mask > 0).float()
    kernel = 2 * width + 1
    dilated = F.max_pool2d(binary, kernel, stride=1, padding=width)
    eroded = -F.max_pool2d(-binary, kernel, stride=1, padding=width)
    return dilated - eroded


def edge_loss(edge_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inf-Net Eq. 4: plain BCE between the edge-attention output and the mask's edge map."""
    return F.binary_cross_entropy_with_logits(edge_logits, edge_targets(mask))


def soft_dice_per_class(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """(C,) soft Dice of each class over the whole batch: (2 sum(p_c g_c) + s) / (sum p_c + sum g_c + s).

    ``logits`` (N, C, H, W), ``target`` (N, H, W) class indices. Summing over the batch keeps a class
    that is absent from one image (consolidation often is) from dominating the loss.
    """
    prob = torch.softmax(logits.float(), dim=1)
    one_hot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (prob * one_hot).sum(dim=(0, 2, 3))
    total = prob.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return (2 * inter + smooth) / (total + smooth)


def multiclass_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """Cross-entropy + (1 - mean soft Dice over the classes) for the GGO / consolidation head.

    ``target`` (N, H, W) or (N, 1, H, W) in {0 background, 1 ground glass, 2 consolidation}. The Dice
    mean skips the background by default: it is most of every slice and its Dice is near 1 anyway.
    """
    target = target[:, 0] if target.dim() == 4 else target
    target = target.long()
    dice = soft_dice_per_class(logits, target)
    dice = dice if include_background else dice[1:]
    return F.cross_entropy(logits.float(), target) + (1 - dice.mean())


def infnet_loss(outputs: tuple, target: torch.Tensor) -> torch.Tensor:
    """Inf-Net's total loss (Eq. 6): L_seg on every deep-supervision map + L_edge on the edge map.

    ``outputs`` = (lateral_map_5, lateral_map_4, lateral_map_3, lateral_map_2, edge), the training-mode
    output of ``models.create_model("infnet")``, all logits at the target's size. Binary maps (one
    channel) use ``structure_loss`` with ``target`` (N, 1, H, W) in {0, 1}; multi-class maps use
    ``multiclass_loss`` with class indices. The edge target is the edge of (target > 0).
    """
    *maps, edge = outputs
    target = target if target.dim() == 4 else target[:, None]
    if maps[0].shape[1] == 1:
        seg = sum(structure_loss(side, target) for side in maps)
    else:
        seg = sum(multiclass_loss(side, target) for side in maps)
    return seg + edge_loss(edge, target)


SEGMENTATION_LOSSES = {"dice": dice_coefficient_loss, "generalised_dice": generalised_dice_loss,
                       "structure": structure_loss}


# ---------------------------------------------------------------- dual-sampling attention (paper 004)
def attention_loss(attention: torch.Tensor, mask: torch.Tensor, include: torch.Tensor | None = None) -> torch.Tensor:
    """L_ex of paper 004 (Eq. 3): sum (T(A) - M)^2 / (sum T(A) + sum M) per volume, for the volumes in ``include``.

    ``attention`` T(A) in [0, 1] and ``mask`` M in {0, 1}, both (N, 1, Z, Y, X); ``include`` (N,) bool
    marks the COVID-19 volumes with an infection mask (CAP volumes, and volumes without a mask, take
    the classification loss only). Returns sum over included volumes / N, so that with L_c (BCE, a mean
    over the batch) L_total = L_c + lambda L_ex is each volume's own loss averaged over the batch.
    """
    t = attention.float().flatten(1)
    m = mask.float().flatten(1)
    per_volume = ((t - m) ** 2).sum(1) / (t.sum(1) + m.sum(1)).clamp_min(EPS)
    if include is not None:
        per_volume = per_volume * include.to(per_volume.device, per_volume.dtype)
    return per_volume.sum() / attention.shape[0]
