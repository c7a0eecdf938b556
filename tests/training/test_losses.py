import torch

from training.losses import dice_coefficient_loss, generalised_dice_loss


def logits_for(prob):
    return torch.logit(prob.clamp(1e-6, 1 - 1e-6))


def test_dice_coefficient_matches_formula():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    prob = torch.full((1, 1, 4, 4), 0.5)
    # D = 2*sum(p g) / (sum p^2 + sum g^2) = 2*4 / (4 + 8) = 2/3
    assert torch.isclose(dice_coefficient_loss(logits_for(prob), target), torch.tensor(1 - 2 / 3), atol=1e-4)


def test_losses_are_zero_for_perfect_and_high_for_inverted_masks():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = logits_for(target)
    for loss in (dice_coefficient_loss, generalised_dice_loss):
        assert loss(perfect, target) < 1e-3
        assert loss(logits_for(1 - target), target) > 0.99


def test_generalised_dice_weights_the_small_class():
    """Missing a small foreground costs about as much as missing the background: not dominated by size."""
    target = torch.zeros(1, 1, 20, 20)
    target[..., :2, :2] = 1  # 4 of 400 pixels
    empty = logits_for(torch.zeros_like(target))
    assert generalised_dice_loss(empty, target) > 0.45
    assert dice_coefficient_loss(empty, target) > 0.99
