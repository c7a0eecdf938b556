"""core.imaging.volume_views: orientation of the three views, true aspect ratio, display size, windows, overlays."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.imaging.volume_views import (
    CURSOR_COLOUR,
    DISPLAY_MAX_SIDE,
    VIEWS,
    Overlays,
    cursor_lines,
    display_shape,
    middle_slices,
    render_view,
    resample,
    slice_count,
    view_pixel_mm,
    view_slice,
)
from core.imaging.windowing import LUNG, MEDIASTINUM, Window
from core.viz import CONSOLIDATION_COLOUR, GGO_COLOUR, LUNG_COLOUR

SHAPE = (20, 30, 40)  # z feet -> head, y front -> back, x patient's right -> left


def marked_volume() -> np.ndarray:
    """-1000 HU everywhere but one voxel near the head (large z), the front (small y) and the patient's right (small x)."""
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    hu[18, 2, 3] = 1000.0  # superior, anterior, patient's right
    return hu


@pytest.mark.parametrize("view, index, at", [
    ("axial", 18, (2, 3)),  # anterior at the top, patient's right on the picture's left
    ("coronal", 2, (1, 3)),  # head at the top (row 20 - 1 - 18), patient's right on the left
    ("sagittal", 3, (1, 2)),  # head at the top, anterior on the left
])
def test_each_view_puts_head_front_and_right_where_radiologists_expect(view, index, at):
    picture = view_slice(marked_volume(), view, index)
    assert np.argwhere(picture == 1000.0).tolist() == [list(at)]
    top_left_quadrant = picture[: picture.shape[0] // 2, : picture.shape[1] // 2]
    assert (top_left_quadrant == 1000.0).any()


def test_slice_counts_middles_and_bounds():
    assert [slice_count(SHAPE, v) for v in VIEWS] == [20, 30, 40]
    assert middle_slices(SHAPE) == {"axial": 10, "coronal": 15, "sagittal": 20}
    assert view_slice(marked_volume(), "coronal", 0).shape == (20, 40)
    assert view_slice(marked_volume(), "sagittal", 0).shape == (20, 30)
    with pytest.raises(IndexError, match="axial slice 20"):
        view_slice(marked_volume(), "axial", 20)
    with pytest.raises(ValueError, match="oblique"):
        view_slice(marked_volume(), "oblique", 0)


def test_pixel_sizes_and_true_aspect_ratio():
    spacing = (2.5, 0.8, 0.7)  # dz, dy, dx
    assert view_pixel_mm(spacing, "axial") == (0.8, 0.7)
    assert view_pixel_mm(spacing, "coronal") == (2.5, 0.7)
    assert view_pixel_mm(spacing, "sagittal") == (2.5, 0.8)
    # 40 slices of 2.5 mm (100 mm) by 100 columns of 1 mm: a square picture, z stretched 2.5 times
    assert display_shape((40, 100), (2.5, 1.0)) == (100, 100)
    # a 512 x 512 x 400 series (0.7 x 0.7 x 1.25 mm): every view fits 256 px with its proportions
    for view in VIEWS:
        source = {"axial": (512, 512), "coronal": (400, 512), "sagittal": (400, 512)}[view]
        pixel = view_pixel_mm((1.25, 0.7, 0.7), view)
        rows, cols = display_shape(source, pixel)
        assert max(rows, cols) == DISPLAY_MAX_SIDE
        assert rows / cols == pytest.approx(source[0] * pixel[0] / (source[1] * pixel[1]), abs=0.01)


def test_resample_keeps_labels_and_averages_grey_levels():
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:4, :4] = 2
    small = resample(labels, (4, 4), nearest=True)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 2}
    assert (small[:2, :2] == 2).all() and (small[2:, 2:] == 0).all()
    stripes = np.tile([0.0, 1.0], (12, 6))  # one-pixel stripes: a 3x reduction must average, not pick
    assert np.allclose(resample(stripes, (12, 4)), 0.5, atol=0.2)
    grey = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert resample(grey, (4, 4)) is grey  # already the right size: untouched
    big = resample(grey, (8, 8))
    assert big.shape == (8, 8) and big.min() >= 0 and big.max() <= 15


def test_render_view_windows_hu_and_has_the_display_size():
    hu = np.linspace(-1200, 400, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    spacing = (2.5, 1.0, 1.0)
    for view in VIEWS:
        picture = render_view(hu, spacing, view, 5, LUNG)
        expected = display_shape(view_slice(hu, view, 5).shape, view_pixel_mm(spacing, view))
        assert picture.shape == (*expected, 3) and picture.dtype == np.uint8
    lung = render_view(hu, spacing, "axial", 5, LUNG)
    soft = render_view(hu, spacing, "axial", 5, MEDIASTINUM)
    free = render_view(hu, spacing, "axial", 5, Window("free", -1000, 10))
    assert not np.array_equal(lung, soft)
    assert free.max() == 255  # everything above -995 HU is white in a narrow window


def test_overlays_draw_lungs_infection_and_attention_in_their_colours():
    hu = np.full(SHAPE, -800.0, dtype=np.float32)
    spacing = (1.0, 1.0, 1.0)
    lungs = np.zeros(SHAPE, dtype=bool)
    lungs[:, 5:25, 5:35] = True
    infection = np.zeros(SHAPE, dtype=np.uint8)
    infection[:, 8:12, 8:12] = 1
    infection[:, 15:20, 20:30] = 2
    attention = np.zeros(SHAPE, dtype=np.float32)
    attention[:, 20:25, 30:34] = 1.0
    plain = render_view(hu, spacing, "axial", 10, LUNG)
    picture = render_view(hu, spacing, "axial", 10, LUNG, Overlays(lungs, infection, attention, opacity=0.5))
    assert tuple(picture[5, 20]) == LUNG_COLOUR  # the lungs' outline
    assert tuple(picture[15, 15]) == tuple(plain[15, 15])  # inside the lungs, no infection: unchanged
    assert tuple(picture[8, 8]) == GGO_COLOUR and tuple(picture[15, 25]) == CONSOLIDATION_COLOUR  # outlines
    assert picture[10, 10, 0] > plain[10, 10, 0] and picture[10, 10, 2] < plain[10, 10, 2]  # amber tint
    assert tuple(picture[2, 2]) == tuple(plain[2, 2])  # no attention, outside everything: grey
    assert not np.array_equal(picture[22, 32], plain[22, 32])  # attention 1: tinted
    with pytest.raises(ValueError, match="lungs overlay"):
        render_view(hu, spacing, "axial", 0, LUNG, Overlays(lungs=lungs[:-1]))


def test_cursor_lines_mark_the_other_views():
    positions = {"axial": 18, "coronal": 2, "sagittal": 3}
    assert cursor_lines(SHAPE, "axial", positions) == ([2], [3])
    assert cursor_lines(SHAPE, "coronal", positions) == ([1], [3])  # z flipped: 20 - 1 - 18
    assert cursor_lines(SHAPE, "sagittal", positions) == ([1], [2])
    picture = render_view(marked_volume(), (1.0, 1.0, 1.0), "axial", 18, LUNG, cursor=positions)
    assert tuple(picture[2, 0]) == CURSOR_COLOUR and tuple(picture[0, 3]) == CURSOR_COLOUR


def test_a_512_x_512_x_400_series_renders_three_views_quickly():
    rng = np.random.default_rng(0)
    hu = rng.normal(-700, 200, size=(400, 512, 512)).astype(np.float32)
    lungs = hu < -600
    infection = (hu > -300).astype(np.uint8)
    overlays = Overlays(lungs, infection, None)
    positions = middle_slices(hu.shape)
    render_view(hu, (1.25, 0.7, 0.7), "axial", 0, LUNG, overlays)  # warm-up
    start = time.perf_counter()
    pictures = [render_view(hu, (1.25, 0.7, 0.7), view, positions[view], LUNG, overlays, cursor=positions)
                for view in VIEWS]
    elapsed = time.perf_counter() - start
    assert all(max(p.shape[:2]) <= DISPLAY_MAX_SIDE for p in pictures)
    assert elapsed < 2.0, f"three views took {elapsed:.2f} s"  # about 0.035 s on one idle core
