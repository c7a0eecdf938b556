"""Inf-Net's evaluation metrics on cases computed by hand (the working is in the comments)."""

import numpy as np
import pytest

from training.metrics import (
    INFNET_THRESHOLDS, class_dice, e_measure, infection_metrics, infection_table, mean_absolute_error,
    mean_e_measure, multiclass_dice_report, s_measure, sensitivity_specificity,
)

# The 4x4 case: a 2x2 lesion in the centre; the prediction misses its bottom-right pixel.
TARGET = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
MISS_ONE = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], float)


def test_s_alpha_of_the_4x4_case():
    # Object part. mu = 4/16 = 1/4.
    #   Foreground: prediction inside the target = (1, 1, 1, 0): mean 3/4, sample std 1/2,
    #   O_fg = 2 (3/4) / ((3/4)^2 + 1 + 1/2) = 1.5 / 2.0625 = 8/11.
    #   Background: 1 - prediction outside = twelve 1s: mean 1, std 0, O_bg = 2 / (1 + 1 + 0) = 1.
    #   S_object = 1/4 * 8/11 + 3/4 * 1 = 41/44.
    # Region part. Target centroid (0-based) (1.5, 1.5) -> 1-based 2.5 -> rounded 3 (MATLAB rounds halves
    #   up): blocks rows/cols 0-2 | 3. Weights 9/16, 3/16, 3/16, 1/16.
    #   Top-left 3x3: x = mean pred = 3/9, y = mean target = 4/9, sample var_x = 2/8, var_y = (20/9)/8,
    #   cov = (5/3)/8; SSIM = 4 x y cov / ((x^2 + y^2)(var_x + var_y)) = (10/81) / (475/2916) = 72/95.
    #   The three other blocks are all zeros in both: alpha = beta = 0 -> 1.
    #   S_region = 9/16 * 72/95 + 7/16 = 1313/1520.
    # S_alpha = (41/44 + 1313/1520) / 2 = 0.897817...
    assert s_measure(MISS_ONE, TARGET) == pytest.approx((41 / 44 + 1313 / 1520) / 2, abs=1e-9)


def test_e_phi_of_the_4x4_case():
    # mu_pred = 3/16, mu_target = 1/4; demeaned values a (prediction) and b (target):
    #   3 true positives: a = 13/16, b = 12/16: xi = 2ab / (a^2 + b^2) = 312/313, phi = (1 + xi)^2 / 4
    #   1 false negative: a = -3/16, b = 12/16: xi = -72/153 = -8/17, phi = (9/17)^2 / 4 = 81/1156
    #   12 true negatives: a = -3/16, b = -4/16: xi = 24/25, phi = (49/25)^2 / 4 = 2401/2500
    # E = (3 phi_tp + phi_fn + 12 phi_tn) / 16 = 0.911581...
    phi_tp = (1 + 312 / 313) ** 2 / 4
    expected = (3 * phi_tp + 81 / 1156 + 12 * 2401 / 2500) / 16
    assert e_measure(MISS_ONE, TARGET) == pytest.approx(expected, abs=1e-9)
    # E-phi mean over the 256 thresholds 1 ... 0: every t > 0 keeps the binary map (E above); t = 0 marks
    # every pixel foreground, so a = 0 everywhere, xi = 0, phi = 1/4.
    assert mean_e_measure(MISS_ONE, TARGET) == pytest.approx((255 * expected + 0.25) / 256, abs=1e-9)


def test_infection_row_of_the_4x4_case():
    row = infection_metrics(MISS_ONE, TARGET)
    # t > 0: Dice 2*3 / (4 + 3) = 6/7, sensitivity 3/4, specificity 12/12; t = 0: everything foreground,
    # Dice 2*4 / (4 + 16) = 2/5, sensitivity 1, specificity 0.
    assert row["dice"] == pytest.approx((255 * 6 / 7 + 2 / 5) / 256)
    assert row["sensitivity"] == pytest.approx((255 * 3 / 4 + 1) / 256)
    assert row["specificity"] == pytest.approx(255 / 256)
    assert row["dice_at_threshold"] == pytest.approx(6 / 7)
    assert row["sensitivity_at_threshold"] == 0.75 and row["specificity_at_threshold"] == 1.0
    assert row["mae"] == pytest.approx(1 / 16)
    assert sensitivity_specificity(MISS_ONE > 0.5, TARGET) == (0.75, 1.0)


def test_perfect_prediction():
    perfect = TARGET.astype(float)
    # Object: inside all 1 (mean 1, std 0 -> 1), outside 1 - 0 = 1 -> 1. Region: each block's SSIM is 1
    # (cov = var_x = var_y) or a constant block (alpha = beta = 0 -> 1). S = 1.
    assert s_measure(perfect, TARGET) == pytest.approx(1.0, abs=1e-9)
    # Every pixel has a = b, xi = 1, phi = 1: E = 16/16.
    assert e_measure(perfect, TARGET) == pytest.approx(1.0, abs=1e-9)
    # The mean over thresholds keeps the reference's t = 0 (every pixel foreground, E = 1/4).
    assert mean_e_measure(perfect, TARGET) == pytest.approx((255 + 0.25) / 256, abs=1e-9)
    row = infection_metrics(perfect, TARGET)
    assert row["mae"] == 0.0 and row["dice_at_threshold"] == 1.0


def test_all_wrong_prediction():
    wrong = 1.0 - TARGET
    # Object: inside 0 -> O_fg = 0; outside 1 - 1 = 0 -> O_bg = 0. Region: top-left SSIM = -40/41
    # (x = 5/9, y = 4/9, cov = -var), constant blocks 1: 9/16 (-40/41) + 7/16 < 0. S = max(0, ...) = 0.
    assert s_measure(wrong, TARGET) == 0.0
    # False positives: a = 1/4, b = -1/4 -> xi = -1 -> phi = 0; false negatives: a = -3/4, b = 3/4 -> 0.
    assert e_measure(wrong, TARGET) == pytest.approx(0.0, abs=1e-9)
    assert mean_e_measure(wrong, TARGET) == pytest.approx(0.25 / 256, abs=1e-9)
    assert mean_absolute_error(wrong, TARGET) == 1.0
    assert infection_metrics(wrong, TARGET)["dice_at_threshold"] == 0.0


def test_empty_masks():
    empty = np.zeros((4, 4), bool)
    # Empty target: S = 1 - mean(pred); E = share of pixels predicted background.
    assert s_measure(np.zeros((4, 4)), empty) == 1.0
    assert s_measure(MISS_ONE, empty) == pytest.approx(1 - 3 / 16)
    assert e_measure(np.zeros((4, 4)), empty) == 1.0
    assert e_measure(MISS_ONE, empty) == pytest.approx(13 / 16)
    # Full target: S = mean(pred).
    assert s_measure(MISS_ONE, ~empty) == pytest.approx(3 / 16)
    # Nothing to find, nothing found: Dice and sensitivity 1 (as dice_iou), specificity 1.
    row = infection_metrics(np.zeros((4, 4)), empty)
    assert row["dice_at_threshold"] == row["sensitivity_at_threshold"] == row["specificity_at_threshold"] == 1.0
    assert sensitivity_specificity(empty, empty) == (1.0, 1.0)


def test_thresholds_and_table():
    assert len(INFNET_THRESHOLDS) == 256 and INFNET_THRESHOLDS[0] == 1 and INFNET_THRESHOLDS[-1] == 0
    # A soft map is min-max normalised before the curves: 0.2/0.4 becomes 0/1, the binary case above.
    soft = 0.2 + 0.2 * MISS_ONE
    assert infection_metrics(soft, TARGET)["dice"] == pytest.approx(infection_metrics(MISS_ONE, TARGET)["dice"])
    assert infection_metrics(soft, TARGET)["dice_at_threshold"] == 0.0  # the served mask (>= 0.5) is empty
    rows = [infection_metrics(MISS_ONE, TARGET), infection_metrics(TARGET.astype(float), TARGET)]
    table = infection_table(rows, groups=["a", "b"])
    assert table["n"] == 2 and table["mae"] == pytest.approx(1 / 32)
    assert table["per_group"]["a"]["dice_at_threshold"] == pytest.approx(6 / 7)


def test_per_class_dice():
    target = np.array([[0, 1, 1], [0, 2, 2], [0, 0, 0]])
    pred = np.array([[0, 1, 0], [0, 2, 2], [0, 2, 0]])
    # GGO: 1 common pixel, 1 predicted + 2 true -> 2/3; consolidation: 2 common, 3 + 2 -> 4/5.
    assert class_dice(pred, target, 1) == pytest.approx(2 / 3)
    assert class_dice(pred, target, 2) == pytest.approx(4 / 5)
    no_consolidation = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]])
    assert class_dice(no_consolidation, no_consolidation, 2) is None  # nothing to score
    report = multiclass_dice_report([pred, no_consolidation], [target, no_consolidation])
    assert report["ggo"]["mean"] == pytest.approx((2 / 3 + 1) / 2) and report["ggo"]["n_slices"] == 2
    assert report["consolidation"] == {"mean": pytest.approx(0.8), "n_slices": 1, "pooled": pytest.approx(0.8)}
    # pooled GGO: common 1 + 2 = 3; predicted 1 + 2, true 2 + 2 -> 6 / 7
    assert report["ggo"]["pooled"] == pytest.approx(6 / 7)
