"""Paper 004's attention loss L_ex (Eq. 3), by hand."""

import pytest
import torch

from training.losses import attention_loss


def test_l_ex_by_hand_on_one_volume():
    t = torch.tensor([0.9, 0.1, 0.6, 0.0]).view(1, 1, 1, 2, 2)
    m = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 2, 2)
    by_hand = (0.1**2 + 0.1**2 + 0.6**2 + 1.0**2) / ((0.9 + 0.1 + 0.6) + 2.0)
    assert attention_loss(t, m).item() == pytest.approx(by_hand)


def test_perfect_attention_costs_nothing_and_opposite_attention_costs_one():
    m = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    assert attention_loss(m.clone(), m).item() == pytest.approx(0.0)
    assert attention_loss(1 - m, m).item() == pytest.approx(1.0)


def test_only_included_volumes_count_and_the_sum_is_over_the_batch():
    t = torch.rand(4, 1, 3, 3, 3)
    m = (torch.rand(4, 1, 3, 3, 3) > 0.6).float()
    include = torch.tensor([True, False, True, False])
    each = [attention_loss(t[i:i + 1], m[i:i + 1]).item() for i in range(4)]
    assert attention_loss(t, m, include).item() == pytest.approx((each[0] + each[2]) / 4)
    assert attention_loss(t, m, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_gradients_flow_to_the_attention_only_for_included_volumes():
    t = torch.rand(2, 1, 2, 2, 2, requires_grad=True)
    m = torch.ones(2, 1, 2, 2, 2)
    attention_loss(t, m, torch.tensor([True, False])).backward()
    assert t.grad[0].abs().sum() > 0 and t.grad[1].abs().sum() == 0
