"""3D clean-up of slice-wise masks (``core.imaging.volume_masks``) on synthetic arrays."""

import numpy as np
import pytest
from scipy import ndimage

from core.imaging.volume_masks import (
    body_midline,
    clean_lung_mask,
    fill_holes_3d,
    fill_holes_slicewise,
    keep_inside,
    keep_lungs,
    split_lungs,
    volume_ml,
)

SHAPE = (40, 64, 96)  # z, y, x


def ellipsoid(centre, radii, shape=SHAPE) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1


def two_lungs(gap: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(right, left): the right lung (small x) a little larger, as in patients."""
    right = ellipsoid((20, 32, 48 - gap / 2 - 18), (16, 22, 18))
    left = ellipsoid((20, 32, 48 + gap / 2 + 16), (15, 21, 16))
    return right, left


def test_slicewise_fill_matches_scipy_slice_by_slice():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random(SHAPE) > 0.35, iterations=1)
    expected = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    assert np.array_equal(fill_holes_slicewise(mask), expected)


def test_3d_fill_matches_scipy():
    rng = np.random.default_rng(1)
    mask = rng.random(SHAPE) > 0.3
    expected = ndimage.binary_fill_holes(mask, structure=ndimage.generate_binary_structure(3, 1))
    assert np.array_equal(fill_holes_3d(mask), expected)


def test_clean_keeps_both_lungs_fills_holes_and_drops_the_rest():
    right, left = two_lungs()
    raw = right | left
    raw[10:14, 28:34, 20:26] = False  # a vessel missed by the network: a hole in every slice it crosses
    raw[20, 30:33, 60:63] = False  # a one-slice hole
    speck = ellipsoid((5, 8, 48), (2, 3, 3))  # gas outside the lungs
    stomach = ellipsoid((2, 50, 70), (2, 6, 8))  # below the left base
    cleaned = clean_lung_mask(raw | speck | stomach)
    assert np.array_equal(cleaned, right | left)


def test_a_collapsed_lung_is_still_a_lung_but_a_same_side_fragment_is_not():
    right, _ = two_lungs()
    small_left = ellipsoid((20, 32, 70), (5, 6, 5))
    fragment = ellipsoid((3, 10, 20), (2, 3, 3)) & ~right  # beside the right lung, not touching it
    kept = keep_lungs(right | small_left | fragment)
    assert np.array_equal(kept, right | small_left)


def test_touching_lungs_are_one_component_kept_whole_and_split_at_the_junction():
    right, left = two_lungs(gap=-2)  # overlapping by two columns: a junction line
    mask = right | left
    assert ndimage.label(mask)[1] == 1
    assert np.array_equal(clean_lung_mask(mask), fill_holes_3d(mask))
    got_right, got_left = split_lungs(mask)
    assert not (got_right & got_left).any() and np.array_equal(got_right | got_left, mask)
    # the cut lands in the junction: each side is its own lung to within the overlap
    assert abs(int(got_right.sum()) - int((right & ~left).sum())) < 0.03 * right.sum()
    assert (got_right & left & ~right).sum() == 0 and (got_left & right & ~left).sum() == 0


def test_split_separate_lungs_by_side_and_measure_volumes():
    right, left = two_lungs()
    got_right, got_left = split_lungs(right | left)
    assert np.array_equal(got_right, right) and np.array_equal(got_left, left)
    spacing = (2.5, 0.8, 0.7)
    assert volume_ml(right, spacing) == pytest.approx(right.sum() * 2.5 * 0.8 * 0.7 / 1000)
    assert split_lungs(np.zeros(SHAPE, bool))[0].sum() == 0


def test_one_lung_only_goes_to_its_side():
    _, left = two_lungs()
    got_right, got_left = split_lungs(left, midline=47.5)
    assert got_right.sum() == 0 and np.array_equal(got_left, left)


def test_body_midline_and_infection_inside_lungs():
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[:, 10:60, 30:80] = 40.0  # a body off-centre towards the patient's left
    assert body_midline(hu) == pytest.approx(54.5)
    labels = np.ones(SHAPE, np.uint8) * 2
    lungs = ellipsoid((20, 32, 48), (5, 5, 5))
    inside = keep_inside(labels, lungs)
    assert inside.dtype == np.uint8 and np.array_equal(inside > 0, lungs)
