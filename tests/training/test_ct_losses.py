"""Inf-Net's losses on tiny tensors whose values are computed by hand in the comments."""

import math

import torch

from training.losses import (
    SEGMENTATION_LOSSES, edge_loss, edge_targets, infnet_loss, multiclass_loss, soft_dice_per_class,
    structure_loss, structure_weights,
)

LN2, LN3 = math.log(2), math.log(3)


def close(value, expected, tol=1e-5):
    return abs(float(value) - expected) < tol


def test_structure_weights_follow_the_31_window_average_with_zero_padding():
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., :, :20] = 1  # left half
    w = structure_weights(mask)[0, 0]
    # (20, 0): window rows 5..35 inside, columns -15..15 -> 16 in-image columns, all ones:
    # mean = 16 * 31 / 961 = 16/31, w = 1 + 5 * (1 - 16/31) = 1 + 75/31
    assert close(w[20, 0], 1 + 75 / 31)
    # (20, 10): columns -5..25 -> in-image 0..25, ones in 0..19 = 20 columns: mean 20/31, w = 1 + 5 * 11/31
    assert close(w[20, 10], 1 + 55 / 31)
    # (20, 39): columns 24..54, no ones in the window: mean 0, w = 1 + 5 * |0 - 0| = 1
    assert close(w[20, 39], 1.0)
    assert torch.all(structure_weights(torch.zeros(1, 1, 8, 8)) == 1)


def test_structure_loss_hand_computed_cases():
    # Empty 4x4 mask, p = 0.5 everywhere: w = 1, wBCE = ln 2; inter = 0, union = 16 * 0.5 = 8,
    # wIoU = 1 - (0 + 1) / (8 - 0 + 1) = 8/9.
    assert close(structure_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)), LN2 + 8 / 9)
    # One pixel, g = 1, p = 0.5: mean over the window = 1/961, w = 1 + 5 * 960/961;
    # wBCE = ln 2 (one pixel), inter = 0.5 w, union = 1.5 w, wIoU = 1 - (0.5 w + 1) / (w + 1).
    w = 1 + 5 * 960 / 961
    assert close(structure_loss(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)), LN2 + 1 - (0.5 * w + 1) / (w + 1))
    # A perfect, confident prediction: BCE ~ 0 and inter = union - inter, so wIoU = 0.
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 3:7] = 1
    assert structure_loss((target * 2 - 1) * 30, target) < 1e-6
    assert structure_loss((1 - 2 * target) * 30, target) > 10
    assert SEGMENTATION_LOSSES["structure"] is structure_loss


def test_edge_targets_are_the_morphological_gradient():
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 1:4, 1:4] = 1
    edge = edge_targets(mask)[0, 0]
    # dilation (3x3) covers the whole 5x5, erosion keeps only the centre: everything but the centre.
    expected = torch.ones(5, 5)
    expected[2, 2] = 0
    assert torch.equal(edge, expected)
    assert edge_targets(torch.ones(1, 1, 6, 6)).sum() == 0  # the image border is not an edge
    assert edge_targets(torch.zeros(1, 1, 6, 6)).sum() == 0
    labels = torch.zeros(1, 1, 5, 5)
    labels[..., 1:4, 1:4] = 2  # multi-class labels: any label > 0 is infection
    assert torch.equal(edge_targets(labels), edge_targets(mask))
    # edge logits 0 -> p = 0.5 -> BCE = ln 2 whatever the target
    assert close(edge_loss(torch.zeros(1, 1, 5, 5), mask), LN2)


def test_soft_dice_and_multiclass_loss_hand_computed():
    target = torch.tensor([[[0, 1], [2, 0]]])  # (1, 2, 2): two background, one GGO, one consolidation
    logits = torch.zeros(1, 3, 2, 2)  # p = 1/3 for every class and pixel
    # background: 2 sum(p g) = 2 * 2/3, sum p = 4/3, sum g = 2 -> (4/3 + 1) / (10/3 + 1) = 7/13
    # GGO and consolidation: 2 * 1/3, sum p = 4/3, sum g = 1 -> (2/3 + 1) / (7/3 + 1) = 1/2
    dice = soft_dice_per_class(logits, target)
    assert torch.allclose(dice, torch.tensor([7 / 13, 0.5, 0.5]))
    # cross-entropy of a uniform softmax over 3 classes = ln 3; 1 - mean(1/2, 1/2) = 1/2
    assert close(multiclass_loss(logits, target), LN3 + 0.5)
    assert close(multiclass_loss(logits, target[:, None]), LN3 + 0.5)  # (N, 1, H, W) targets too
    assert close(multiclass_loss(logits, target, include_background=True), LN3 + 1 - (7 / 13 + 1) / 3)
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40
    assert multiclass_loss(perfect, target) < 1e-4


def test_infnet_loss_sums_every_side_output_and_the_edge():
    target = torch.zeros(1, 1, 4, 4)
    outputs = tuple(torch.zeros(1, 1, 4, 4) for _ in range(5))  # four maps + edge, all p = 0.5
    # each map: ln 2 + 8/9 (empty mask, see above); edge: ln 2
    assert close(infnet_loss(outputs, target), 4 * (LN2 + 8 / 9) + LN2)
    labels = torch.tensor([[[0, 1], [2, 0]]])
    outputs = tuple(torch.zeros(1, 3, 2, 2) for _ in range(4)) + (torch.zeros(1, 1, 2, 2),)
    assert close(infnet_loss(outputs, labels), 4 * (LN3 + 0.5) + LN2)


def test_losses_backpropagate():
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    infnet_loss((logits, logits * 2, logits, logits, logits), target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    multi = torch.randn(2, 3, 8, 8, requires_grad=True)
    multiclass_loss(multi, torch.randint(0, 3, (2, 8, 8))).backward()
    assert torch.isfinite(multi.grad).all()
