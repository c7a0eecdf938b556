"""Paper 004's infection-burden groups and the dual-sampling fusion rule (Eq. 5), at their boundaries."""

import math

import pytest

from core.imaging.infection_burden import dual_sampling_probability, fusion_weight, ratio_band, sampling_group


@pytest.mark.parametrize("ratio, band", [
    (0.0, "small"), (0.0049999, "small"), (0.005, "medium"), (0.02, "medium"), (0.030, "medium"),
    (0.0300001, "large"), (0.5, "large"), (1.0, "large"),
])
def test_table_iii_bands(ratio, band):
    assert ratio_band(ratio) == band


@pytest.mark.parametrize("label, ratio, group", [
    ("covid", 0.0, "covid-small"), ("covid", 0.0299999, "covid-small"), ("covid", 0.030, "covid-large"),
    ("covid", 0.2, "covid-large"),
    ("cap", 0.0, "cap-small"), ("cap", 0.001, "cap-small"), ("cap", 0.0010001, "cap-large"), ("cap", 0.3, "cap-large"),
])
def test_size_balanced_groups(label, ratio, group):
    assert sampling_group(label, ratio) == group


@pytest.mark.parametrize("ratio, weight", [
    (0.0, 0.35), (0.0009999, 0.35), (0.001, 0.96), (0.01, 0.96), (0.030, 0.96), (0.0300001, 0.35), (0.9, 0.35),
])
def test_fusion_weight(ratio, weight):
    assert fusion_weight(ratio) == weight


def test_dual_sampling_probability_is_eq_5():
    assert dual_sampling_probability(0.2, 0.8, 0.01) == pytest.approx(0.96 * 0.2 + 0.04 * 0.8)
    assert dual_sampling_probability(0.2, 0.8, 0.0) == pytest.approx(0.35 * 0.2 + 0.65 * 0.8)
    assert dual_sampling_probability(0.2, 0.8, 0.1) == pytest.approx(0.35 * 0.2 + 0.65 * 0.8)
    assert dual_sampling_probability(0.7, 0.7, 0.5) == pytest.approx(0.7)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_refuses_impossible_ratios(bad):
    with pytest.raises(ValueError):
        ratio_band(bad)
    with pytest.raises(ValueError):
        fusion_weight(bad)


def test_unknown_label():
    with pytest.raises(ValueError, match="covid"):
        sampling_group("normal", 0.1)
