import numpy as np

from core.postprocess import (HRNET_MIN_AREA_FRACTION, hrnet_postprocess, manet_postprocess, measure_lungs,
                              passes_min_area)


def two_lungs(shape=(200, 200)):
    mask = np.zeros(shape, bool)
    mask[40:160, 20:90] = True  # image left = patient's right lung, larger
    mask[50:150, 120:180] = True
    return mask


def test_manet_fills_holes_and_removes_small_objects():
    mask = two_lungs()
    mask[80:90, 40:50] = False  # a hole inside the right lung
    mask[5:8, 5:8] = True  # 9-pixel speck
    cleaned = manet_postprocess(mask, min_object_fraction=0.001)  # 40 pixels at 200x200
    assert cleaned[85, 45] and not cleaned[6, 6]
    assert cleaned.sum() == two_lungs().sum()


def test_hrnet_dilation_then_closing_grows_by_eight_pixels():
    mask = np.zeros((100, 100), bool)
    mask[50, 50] = True
    out = hrnet_postprocess(mask)
    # 8 dilations with a 3x3 cross give a diamond of radius 8; closing keeps a convex diamond intact.
    assert out[50, 58] and not out[50, 59] and out[42, 50] and not out[41, 50]
    assert out.sum() == 2 * 8 * 9 + 1


def test_minimum_area_rule_scales_from_512():
    assert np.isclose(HRNET_MIN_AREA_FRACTION, 50_000 / 512**2)
    mask = np.zeros((512, 512), bool)
    mask.flat[:49_999] = True
    assert not passes_min_area(mask)
    mask.flat[:50_000] = True
    assert passes_min_area(mask)


def test_measure_lungs_splits_left_and_right():
    lungs = measure_lungs(two_lungs())
    assert lungs.components == 2
    assert np.isclose(lungs.right_lung_fraction, 120 * 70 / 40_000)
    assert np.isclose(lungs.left_lung_fraction, 100 * 60 / 40_000)
    assert np.isclose(lungs.area_fraction, lungs.right_lung_fraction + lungs.left_lung_fraction)
    assert lungs.right_to_left_ratio > 1
