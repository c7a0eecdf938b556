"""Paper 004's size-balanced sampler (Sec. III-C): group weights and the frequencies it draws."""

import numpy as np
import pytest

from training.samplers import SizeBalancedSampler, group_weights


def groups_of(counts: dict[str, int]) -> list[str]:
    return [group for group, count in counts.items() for _ in range(count)]


def test_weights_are_the_papers_ratios():
    counts = {"covid-small": 20, "covid-large": 30, "cap-small": 45, "cap-large": 15}
    assert group_weights(counts) == {"covid-small": 1.5, "covid-large": 1.0, "cap-small": 1.0, "cap-large": 3.0}
    sampler = SizeBalancedSampler(groups_of(counts))
    assert sampler.probabilities == pytest.approx({"covid-small": 1.5 / 6.5, "covid-large": 1 / 6.5,
                                                   "cap-small": 1 / 6.5, "cap-large": 3 / 6.5})


def test_draw_frequencies_follow_the_group_probabilities_and_are_uniform_inside_a_group():
    counts = {"covid-small": 4, "covid-large": 12, "cap-small": 10, "cap-large": 5}
    groups = groups_of(counts)
    sampler = SizeBalancedSampler(groups, seed=3)
    drawn = sampler.draw(60000, np.random.default_rng(0))
    by_group = {g: np.isin(drawn, sampler.members[g]).mean() for g in counts}
    assert by_group == pytest.approx(sampler.probabilities, abs=0.01)
    per_volume = np.bincount(drawn, minlength=len(groups)) / len(drawn)
    for group, members in sampler.members.items():  # each member of a group: the group's share / its size
        assert per_volume[members] == pytest.approx(np.full(len(members), sampler.probabilities[group] / len(members)),
                                                    rel=0.1)


def test_an_epoch_is_deterministic_per_seed_and_epoch_and_as_long_as_the_training_set():
    groups = groups_of({"covid-small": 3, "covid-large": 9, "cap-small": 8, "cap-large": 2})
    batches = SizeBalancedSampler(groups, seed=1).batches(5)
    first = batches(0)
    assert [len(b) for b in first] == [5, 5, 5, 5, 2]
    assert all(a.equal(b) for a, b in zip(first, SizeBalancedSampler(groups, seed=1).batches(5)(0)))
    assert not all(a.equal(b) for a, b in zip(first, batches(1)))
    assert not all(a.equal(b) for a, b in zip(first, SizeBalancedSampler(groups, seed=2).batches(5)(0)))


def test_empty_groups_are_never_drawn_and_never_starve_the_others():
    counts = {"covid-small": 0, "covid-large": 6, "cap-small": 5, "cap-large": 0}
    assert group_weights(counts) == {"covid-small": 0.0, "covid-large": 1.0, "cap-small": 1.0, "cap-large": 0.0}
    counts = {"covid-small": 4, "covid-large": 0, "cap-small": 0, "cap-large": 3}  # partners empty: weight 1
    assert group_weights(counts) == {"covid-small": 1.0, "covid-large": 0.0, "cap-small": 0.0, "cap-large": 1.0}
    sampler = SizeBalancedSampler(groups_of(counts))
    drawn = sampler.draw(2000, np.random.default_rng(0))
    assert set(drawn.tolist()) == set(range(7))


def test_refuses_unknown_groups_and_an_empty_set():
    with pytest.raises(ValueError, match="Unknown"):
        SizeBalancedSampler(["covid-small", "normal"])
    with pytest.raises(ValueError):
        SizeBalancedSampler([])
