"""Regions drawn with a review: validation, label masks, JSON, the canvas's fabric.js JSON, storage, CSV, migration.

Every expected value is computed by hand in the comments beside it. (Paper 002's heat-map regions
are tested in test_regions.py; this file is about the reviewer's regions.)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from PIL import Image

from core.reviews import ReviewInput, ReviewStore, ReviewValidationError, alembic_config
from core.reviews.canvas_drawing import DrawnShape, shapes_from_fabric
from core.reviews.regions import (
    MAX_POINTS,
    MAX_REGIONS,
    TAG_COLOURS,
    Region,
    mask_png,
    outline_regions,
    regions_from_json,
    regions_mask,
    regions_on_slice,
    regions_to_json,
    validate_regions,
)

PROBS = {"normal": 0.3, "covid": 0.7}
SQUARE = ((2.0, 1.0), (5.0, 1.0), (5.0, 4.0), (2.0, 4.0))  # columns 2-4, rows 1-3 (centres 2.5..4.5, 1.5..3.5)


def box(tag: str = "missed finding", points=SQUARE, **slice_) -> Region:
    return Region(kind="rectangle", tag=tag, points=points, **slice_)


def make_input(**changes) -> ReviewInput:
    values = dict(reviewer="Dr Ann", case_hash=hashlib.sha256(b"case").hexdigest(), model_name="manet",
                  model_version="1.0", weights_sha256=hashlib.sha256(b"w").hexdigest(),
                  predicted_probabilities=dict(PROBS), predicted_label="covid", verdict="agree", confidence=4)
    values.update(changes)
    return ReviewInput(**values)


# --------------------------------------------------------------------------------------------------
# Region validation


def test_a_region_is_normalised():
    region = Region(kind=" Polygon ", tag="False Finding", points=[[1, 2], (3.456789, 4), (0.004, 9.999)]).validated()
    assert region == Region(kind="polygon", tag="false finding", points=((1.0, 2.0), (3.46, 4.0), (0.0, 10.0)))
    assert isinstance(region.points, tuple) and all(isinstance(p, tuple) for p in region.points)
    from_numpy = Region(kind="polygon", tag="other", points=np.array([[1, 2], [3, 4], [5, 0]], np.float32)).validated()
    assert from_numpy.points == ((1.0, 2.0), (3.0, 4.0), (5.0, 0.0)) and type(from_numpy.points[0][0]) is float


@pytest.mark.parametrize("region, words", [
    (Region(kind="circle", tag="other", points=SQUARE), "shape"),
    (Region(kind="rectangle", tag="interesting", points=SQUARE), "tag"),
    (Region(kind="rectangle", tag=None, points=SQUARE), "tag"),
    (Region(kind="rectangle", tag="other", points=SQUARE[:3]), "at least 4"),
    (Region(kind="rectangle", tag="other", points=(*SQUARE, (1, 1))), "4 corners"),
    (Region(kind="polygon", tag="other", points=((0, 0), (1, 1))), "at least 3"),
    (Region(kind="polygon", tag="other", points=((0, 0), (1, float("nan")), (2, 2))), "finite"),
    (Region(kind="polygon", tag="other", points=((0, 0), (1, float("inf")), (2, 2))), "finite"),
    (Region(kind="polygon", tag="other", points=((0, 0), (-1, 1), (2, 2))), "between 0"),
    (Region(kind="polygon", tag="other", points=((0, 0), (1e6, 1), (2, 2))), "between 0"),
    (Region(kind="polygon", tag="other", points=((0, 0), (True, 1), (2, 2))), "finite number"),
    (Region(kind="polygon", tag="other", points=((0, 0), (1, 1, 1), (2, 2))), "pair"),
    (Region(kind="polygon", tag="other", points="0,0 1,1 2,2"), "sequence"),
    (Region(kind="freehand", tag="other", points=tuple((i, i % 7) for i in range(MAX_POINTS + 1))), "more than 2000"),
    (Region(kind="rectangle", tag="other", points=SQUARE, slice_view="oblique", slice_index=3), "view"),
    (Region(kind="rectangle", tag="other", points=SQUARE, slice_view="axial", slice_index=-1), "slice number"),
    (Region(kind="rectangle", tag="other", points=SQUARE, slice_view="axial", slice_index=None), "slice number"),
])
def test_bad_regions_are_refused_naming_the_field(region, words):
    with pytest.raises(ReviewValidationError, match=words) as error:
        validate_regions([region], needs_slice=region.slice_view is not None)
    assert error.value.field == "regions"
    assert "Region 1" in str(error.value)


def test_at_most_50_regions_and_the_slice_rule():
    assert validate_regions([box()] * MAX_REGIONS, needs_slice=False) == (box(),) * MAX_REGIONS
    with pytest.raises(ReviewValidationError, match="at most 50"):
        validate_regions([box()] * (MAX_REGIONS + 1), needs_slice=False)
    with pytest.raises(ReviewValidationError, match="must name the slice"):
        validate_regions([box()], needs_slice=True)
    with pytest.raises(ReviewValidationError, match="only regions drawn on a CT volume"):
        validate_regions([box(slice_view="axial", slice_index=4)], needs_slice=False)
    with pytest.raises(ReviewValidationError, match="sequence of Region"):
        validate_regions(box(), needs_slice=False)
    with pytest.raises(ReviewValidationError, match="not a Region"):
        validate_regions([{"kind": "rectangle"}], needs_slice=False)
    assert validate_regions(None, needs_slice=False) == ()


# --------------------------------------------------------------------------------------------------
# Masks


def test_rectangle_mask_holds_the_pixels_whose_centres_are_inside():
    mask = regions_mask([box("missed finding")], (6, 7))
    expected = np.zeros((6, 7), np.uint8)
    expected[1:4, 2:5] = 1  # x in [2, 5]: centres 2.5, 3.5, 4.5; y in [1, 4]: centres 1.5, 2.5, 3.5
    assert mask.dtype == np.uint8 and mask.shape == (6, 7)
    np.testing.assert_array_equal(mask, expected)


def test_triangle_mask_edges_count_as_inside():
    # (0,0), (4,0), (0,4): centre (j + .5, i + .5) inside when j + i + 1 <= 4
    mask = regions_mask([Region(kind="polygon", tag="false finding", points=((0, 0), (4, 0), (0, 4)))], (5, 5))
    expected = np.array([[2, 2, 2, 2, 0], [2, 2, 2, 0, 0], [2, 2, 0, 0, 0], [2, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, expected)


def test_tags_have_their_values_the_later_region_wins_and_binary_is_one():
    first = box("wrong location", ((0, 0), (4, 0), (4, 4), (0, 4)))  # rows/cols 0-3, value 3
    second = box("other", ((2, 2), (6, 2), (6, 6), (2, 6)))  # rows/cols 2-5, value 4, drawn later
    mask = regions_mask([first, second], (6, 6))
    assert mask[0, 0] == 3 and mask[3, 3] == 4 and mask[5, 5] == 4 and mask[0, 5] == 0
    assert np.count_nonzero(mask == 3) == 16 - 4 and np.count_nonzero(mask == 4) == 16
    binary = regions_mask([first, second], (6, 6), binary=True)
    np.testing.assert_array_equal(binary, (mask > 0).astype(np.uint8))


def test_a_region_beyond_the_image_is_cut_at_its_edge():
    mask = regions_mask([box(points=((3, 3), (50, 3), (50, 50), (3, 50)))], (5, 5))
    assert mask.sum() == 4 and mask[3:, 3:].all()  # rows and columns 3-4


def test_mask_png_holds_the_label_values():
    mask = regions_mask([box("false finding")], (6, 7))
    decoded = np.asarray(Image.open(io.BytesIO(mask_png(mask))))
    np.testing.assert_array_equal(decoded, mask)
    assert decoded.max() == 2


def test_outlines_are_drawn_at_the_picture_size_in_the_tag_colour():
    picture = np.zeros((20, 20), np.float32)  # the image (10 x 10) shown at twice its size
    out = outline_regions(picture, [box("missed finding", ((1, 1), (5, 1), (5, 5), (1, 5)))], (10, 10), width=1)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert tuple(out[2, 6]) == TAG_COLOURS["missed finding"]  # top edge: y = 1 -> row 2; x = 3 -> column 6
    assert tuple(out[6, 6]) == (0, 0, 0)  # inside stays as it was


# --------------------------------------------------------------------------------------------------
# JSON (the CSV column)


def test_json_is_stable_and_documented():
    regions = (box(), Region(kind="freehand", tag="other", points=((1.5, 2.25), (3, 4), (5, 0)),
                             slice_view="coronal", slice_index=12))
    text = regions_to_json(regions)
    assert text == (
        '[{"kind":"rectangle","tag":"missed finding","points":[[2.0,1.0],[5.0,1.0],[5.0,4.0],[2.0,4.0]],'
        '"slice_view":null,"slice_index":null},'
        '{"kind":"freehand","tag":"other","points":[[1.5,2.25],[3.0,4.0],[5.0,0.0]],'
        '"slice_view":"coronal","slice_index":12}]'
    )
    assert regions_from_json(text) == regions
    assert regions_to_json(()) == "[]" and regions_from_json("[]") == ()
    with pytest.raises(ReviewValidationError):
        regions_from_json("{not json")
    with pytest.raises(ReviewValidationError):
        regions_from_json('{"kind": "rectangle"}')


def test_regions_of_one_slice():
    axial_4 = box(slice_view="axial", slice_index=4)
    regions = (axial_4, box(slice_view="axial", slice_index=5), box(slice_view="coronal", slice_index=4))
    assert regions_on_slice(regions, "axial", 4) == (axial_4,)
    assert regions_on_slice((box(),), None, None) == (box(),)


# --------------------------------------------------------------------------------------------------
# Canvas drawing (fabric.js JSON) -> image pixels


def one_shape(obj: dict, canvas=(400, 400), image=(800, 800)) -> DrawnShape:
    (shape,) = shapes_from_fabric({"version": "7.4.0", "objects": [obj]}, canvas_shape=canvas, image_shape=image)
    return shape


def test_rect_of_the_rect_tool_is_scaled_to_the_image():
    # What the canvas's rect tool makes: origin left/top, strokeUniform, stroke 2 -> size 100 x 60 + 2;
    # centre (100 + 51, 50 + 31) = (151, 81), corners 151 -+ 50, 81 -+ 30; image = canvas x 2.
    shape = one_shape({"type": "Rect", "left": 100, "top": 50, "width": 100, "height": 60, "originX": "left",
                       "originY": "top", "strokeWidth": 2, "strokeUniform": True, "scaleX": 1, "scaleY": 1, "angle": 0})
    assert shape == DrawnShape("rectangle", ((202.0, 102.0), (402.0, 102.0), (402.0, 222.0), (202.0, 222.0)))


def test_scaled_rect_without_stroke_and_a_non_square_image():
    # left 10, top 10, 20 x 10 scaled (2, 1.5) -> canvas [10, 50] x [10, 25];
    # canvas 100 x 200 (rows x cols) onto an image of 50 x 400: x * 2, y * 0.5
    shape = one_shape({"type": "rect", "left": 10, "top": 10, "width": 20, "height": 10, "scaleX": 2, "scaleY": 1.5,
                       "strokeWidth": 0, "originX": "left", "originY": "top"}, canvas=(100, 200), image=(50, 400))
    assert shape.points == ((20.0, 5.0), (100.0, 5.0), (100.0, 12.5), (20.0, 12.5))


def test_rotated_rect_turns_about_its_origin_point():
    # Top-left corner stays at (100, 100); 90 degrees clockwise on screen: x axis -> down, y axis -> left.
    shape = one_shape({"type": "Rect", "left": 100, "top": 100, "width": 40, "height": 20, "angle": 90,
                       "strokeWidth": 0, "originX": "left", "originY": "top"}, image=(400, 400))
    np.testing.assert_allclose(shape.points, [(100, 100), (100, 140), (80, 140), (80, 100)], atol=1e-9)


def test_flipped_and_centre_origin_rect():
    # origin centre: (left, top) is the centre; a flip does not move a rectangle's corners as a set.
    shape = one_shape({"type": "Rect", "left": 50, "top": 40, "width": 20, "height": 10, "originX": "center",
                       "originY": "center", "strokeWidth": 4, "flipX": True}, image=(400, 400))
    assert sorted(shape.points) == [(40.0, 35.0), (40.0, 45.0), (60.0, 35.0), (60.0, 45.0)]


def test_polygon_is_read_where_it_is_shown_even_after_a_move():
    points = [{"x": 10, "y": 10}, {"x": 50, "y": 10}, {"x": 30, "y": 40}]  # bbox centre (30, 25)
    polygon = {"type": "Polygon", "points": points, "left": 30, "top": 25, "width": 40, "height": 30,
               "originX": "center", "originY": "center", "strokeWidth": 3}
    assert one_shape(polygon, image=(400, 400)).points == ((10.0, 10.0), (50.0, 10.0), (30.0, 40.0))
    moved = {**polygon, "left": 130, "top": 35}  # dragged 100 right, 10 down with the edit tool
    assert one_shape(moved, image=(400, 400)).points == ((110.0, 20.0), (150.0, 20.0), (130.0, 50.0))
    # fabric.js before 7 placed polygons by their top-left corner, stroke included: 30 - (40 + 3) / 2 = 8.5
    legacy = {**polygon, "left": 8.5, "top": 8.5, "originX": "left", "originY": "top"}
    assert one_shape(legacy, image=(400, 400)).points == ((10.0, 10.0), (50.0, 10.0), (30.0, 40.0))


def test_free_path_is_flattened_with_its_curves_true_extremes():
    # M 0 0 Q 10 20 20 0: x = 20 t, y = 40 t (1 - t); highest at t = 0.5, y = 10 -> bbox [0, 20] x [0, 10],
    # centre (10, 5), which is where fabric.js puts the object (left/top with origin centre).
    path = {"type": "Path", "path": [["M", 0, 0], ["Q", 10, 20, 20, 0]], "left": 10, "top": 5, "width": 20,
            "height": 10, "originX": "center", "originY": "center", "strokeWidth": 3}
    shape = one_shape(path, image=(400, 400))
    assert shape.kind == "freehand"
    np.testing.assert_allclose(shape.points, [(0, 0), (5, 7.5), (10, 10), (15, 7.5), (20, 0)], atol=1e-9)


def test_path_lines_cubics_and_closing():
    # M 0 0 L 10 0 H 20 V 10 C 20 20 0 20 0 10 Z; the cubic's lowest point: t = 0.5, y = 17.5
    # bbox [0, 20] x [0, 17.5], centre (10, 8.75); the closing Z adds no point.
    commands = [["M", 0, 0], ["L", 10, 0], ["H", 20], ["V", 10], ["C", 20, 20, 0, 20, 0, 10], ["Z"]]
    path = {"type": "path", "path": commands,
            "left": 10, "top": 8.75, "originX": "center", "originY": "center", "width": 20, "height": 17.5}
    points = one_shape(path, image=(400, 400)).points
    assert points[:4] == ((0.0, 0.0), (10.0, 0.0), (20.0, 0.0), (20.0, 10.0))
    np.testing.assert_allclose(points[5], (10, 17.5))  # t = 0.5 of the cubic
    assert points[-1] == (0.0, 10.0) and len(points) == 4 + 4


def test_points_are_clipped_to_the_image():
    shape = one_shape({"type": "Rect", "left": -20, "top": 380, "width": 60, "height": 40, "strokeWidth": 0,
                       "originX": "left", "originY": "top"})
    assert shape.points == ((0.0, 760.0), (80.0, 760.0), (80.0, 800.0), (0.0, 800.0))


def test_a_long_free_path_is_simplified_to_the_point_limit():
    angles = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    circle = [["M", 200 + 100 * np.cos(angles[0]), 200 + 100 * np.sin(angles[0])]]
    circle += [["L", 200 + 100 * np.cos(a), 200 + 100 * np.sin(a)] for a in angles[1:]]
    shape = one_shape({"type": "Path", "path": circle, "left": 200, "top": 200, "originX": "center",
                       "originY": "center", "width": 200, "height": 200}, image=(400, 400))
    assert 10 < len(shape.points) <= MAX_POINTS
    radii = np.hypot(*(np.array(shape.points) - 200).T)
    assert np.abs(radii - 100).max() < 1


def test_empty_drawings_and_tagging():
    assert shapes_from_fabric(None, canvas_shape=(10, 10), image_shape=(10, 10)) == []
    assert shapes_from_fabric({"objects": []}, canvas_shape=(10, 10), image_shape=(10, 10)) == []
    shape = DrawnShape("polygon", ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    assert shape.tagged("other", "axial", 3) == Region("polygon", "other", shape.points, "axial", 3)


@pytest.mark.parametrize("obj, words", [
    ({"type": "Circle", "radius": 4}, "rectangles, polygons"),
    ({"type": "Rect", "width": 4, "height": 4, "skewX": 10}, "skewed"),
    ({"type": "Rect", "width": 4, "height": 4, "originX": "middle"}, "origin"),
    ({"type": "Rect", "width": "wide", "height": 4}, "not a number"),
    ({"type": "Polygon", "points": []}, "no points"),
    ({"type": "Polygon", "points": [{"x": 1}]}, "cannot be read"),
    ({"type": "Path", "path": [["M", 0, 0], ["A", 1, 1, 0, 0, 1, 4, 4]]}, "'A'"),
    ({"type": "Path", "path": [["L", 4, 4]]}, "'L'"),
    ("not an object", "cannot be read"),
])
def test_unreadable_shapes_are_refused_naming_the_field(obj, words):
    with pytest.raises(ReviewValidationError, match=words) as error:
        shapes_from_fabric({"objects": [obj]}, canvas_shape=(10, 10), image_shape=(10, 10))
    assert error.value.field == "regions"


# --------------------------------------------------------------------------------------------------
# The store


def region_rows(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT review_id, ordinal, kind, tag, points, slice_view, slice_index "
                            "FROM review_regions ORDER BY id").fetchall()


def test_regions_round_trip_with_the_review(store: ReviewStore, db_path: Path):
    triangle = Region(kind="polygon", tag="false finding", points=((0.123, 0), (4, 0), (0, 4)))
    saved = store.add_review(make_input(regions=(box(), triangle)))
    rounded = Region(kind="polygon", tag="false finding", points=((0.12, 0.0), (4.0, 0.0), (0.0, 4.0)))
    assert saved.regions == (box(), rounded)
    assert store.current_reviews()[0].regions == saved.regions
    assert store.history(saved.review_uid)[0].regions == saved.regions
    assert region_rows(db_path) == [
        (saved.id, 0, "rectangle", "missed finding", "[[2.0, 1.0], [5.0, 1.0], [5.0, 4.0], [2.0, 4.0]]", None, None),
        (saved.id, 1, "polygon", "false finding", "[[0.12, 0.0], [4.0, 0.0], [0.0, 4.0]]", None, None),
    ]
    assert store.add_review(make_input()).regions == ()


def test_an_amendment_has_its_own_regions_and_the_old_version_keeps_its(store: ReviewStore):
    first = store.add_review(make_input(regions=(box(),)))
    second = store.amend_review(first.review_uid, first.to_input(regions=(box("other"), box("wrong location"))))
    third = store.amend_review(first.review_uid, second.to_input(note="regions carried over"))
    assert [v.regions for v in store.history(first.review_uid)] == [
        (box(),), (box("other"), box("wrong location")), (box("other"), box("wrong location"))]
    assert store.current_reviews()[0].regions == third.regions
    fourth = store.amend_review(first.review_uid, third.to_input(regions=()))
    assert store.current_reviews()[0].regions == () == fourth.regions


def test_a_ct_volume_review_stores_the_slice_of_each_region(store: ReviewStore, db_path: Path):
    regions = (box(slice_view="axial", slice_index=40), box("other", slice_view="sagittal", slice_index=7))
    saved = store.add_review(make_input(task="ct-volume", regions=regions))
    assert saved.regions == regions
    assert [row[5:] for row in region_rows(db_path)] == [("axial", 40), ("sagittal", 7)]
    with pytest.raises(ReviewValidationError, match="name the slice") as error:
        store.add_review(make_input(task="ct-volume", regions=(box(),)))
    assert error.value.field == "regions"
    with pytest.raises(ReviewValidationError, match="only regions drawn on a CT volume"):
        store.add_review(make_input(task="ct-slice", regions=regions))
    assert len(store.current_reviews()) == 1


def test_bad_regions_save_nothing(store: ReviewStore, db_path: Path):
    with pytest.raises(ReviewValidationError) as error:
        store.add_review(make_input(regions=(box(), box("nonsense"))))
    assert error.value.field == "regions" and "Region 2" in str(error.value)
    assert store.current_reviews() == [] and region_rows(db_path) == []


def test_the_review_and_its_regions_are_one_transaction(store: ReviewStore, db_path: Path, monkeypatch):
    import core.reviews.store as store_module

    def fail(conn, review_id, regions):
        conn.exec_driver_sql("INSERT INTO review_regions (review_id, ordinal, kind, tag, points) "
                             "VALUES (?, 0, 'rectangle', 'bad tag', '[]')", (review_id,))

    monkeypatch.setattr(store_module, "_insert_regions", fail)
    with pytest.raises(Exception):
        store.add_review(make_input(regions=(box(),)))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM reviews").fetchone() == (0,)
    assert region_rows(db_path) == []


def test_regions_are_append_only_and_checked(store: ReviewStore, db_path: Path):
    saved = store.add_review(make_input(regions=(box(),)))
    with sqlite3.connect(db_path) as conn:
        for statement in ("UPDATE review_regions SET tag = 'other'", "DELETE FROM review_regions"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)
        for values, constraint in [
            ((saved.id, 1, "circle", "other", None, None), "ck_review_regions_kind"),
            ((saved.id, 1, "polygon", "maybe", None, None), "ck_review_regions_tag"),
            ((saved.id, 1, "polygon", "other", "axial", None), "ck_review_regions_slice_pair"),
            ((saved.id, 1, "polygon", "other", "oblique", 2), "ck_review_regions_slice_view"),
            ((saved.id, 0, "polygon", "other", None, None), "UNIQUE"),
        ]:
            with pytest.raises(sqlite3.IntegrityError, match=constraint):
                conn.execute("INSERT INTO review_regions (review_id, ordinal, kind, tag, points, slice_view, "
                             "slice_index) VALUES (?, ?, ?, ?, '[]', ?, ?)", values)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")  # outside any transaction, or SQLite ignores it
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute("INSERT INTO review_regions (review_id, ordinal, kind, tag, points) "
                         "VALUES (999, 0, 'polygon', 'other', '[]')")
    assert store.current_reviews()[0].regions == (box(),)


def test_csv_has_the_regions_column_as_json(store: ReviewStore):
    from core.reviews import CSV_COLUMNS

    first = store.add_review(make_input(regions=(box(),)))
    store.amend_review(first.review_uid, first.to_input(regions=()))
    store.add_review(make_input(reviewer="Dr Bo", task="ct-volume",
                                regions=(box("other", slice_view="coronal", slice_index=3),)))
    text = store.export_csv(include_history=True)
    header = text.splitlines()[0].split(",")
    assert header[:len(CSV_COLUMNS)] == list(CSV_COLUMNS) and "regions" in header
    rows = list(csv.DictReader(io.StringIO(text)))
    by_key = {(r["reviewer"], r["version"]): r["regions"] for r in rows}
    assert by_key[("Dr Ann", "1")] == regions_to_json((box(),))
    assert by_key[("Dr Ann", "2")] == "[]"
    assert json.loads(by_key[("Dr Bo", "1")]) == [{"kind": "rectangle", "tag": "other",
                                                   "points": [[2.0, 1.0], [5.0, 1.0], [5.0, 4.0], [2.0, 4.0]],
                                                   "slice_view": "coronal", "slice_index": 3}]
    current = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert sorted(r["regions"] for r in current) == sorted(["[]", by_key[("Dr Bo", "1")]])


# --------------------------------------------------------------------------------------------------
# Migration 0004


def test_upgrade_from_0003_keeps_the_reviews_and_they_have_no_regions(db_path: Path, url: str):
    command.upgrade(alembic_config(url), "0003")
    with sqlite3.connect(db_path) as conn:
        assert "review_regions" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    with ReviewStore(url) as store:
        old = store.add_review(make_input())  # written at head, then downgraded below
    command.downgrade(alembic_config(url), "0003")
    with ReviewStore(url) as store:  # opening migrates to head again
        (review,) = store.current_reviews()
        assert review.review_uid == old.review_uid and review.regions == ()
        store.amend_review(review.review_uid, review.to_input(regions=(box(),)))
        assert store.current_reviews()[0].regions == (box(),)
    with sqlite3.connect(db_path) as conn:
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"review_regions_no_update", "review_regions_no_delete"} <= triggers


def test_downgrade_below_0004_is_refused_while_regions_exist_unless_forced(db_path: Path, url: str):
    with ReviewStore(url) as store:
        store.add_review(make_input(regions=(box(),)))
    with pytest.raises(RuntimeError, match="drop_regions=yes"):
        command.downgrade(alembic_config(url), "0003")
    assert len(region_rows(db_path)) == 1
    config = alembic_config(url)
    config.cmd_opts = type("Options", (), {"x": ["drop_regions=yes"]})()
    command.downgrade(config, "0003")
    with sqlite3.connect(db_path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert conn.execute("SELECT count(*) FROM reviews").fetchone() == (1,)
    assert "review_regions" not in names and "review_regions_no_update" not in names


def test_region_model_matches_the_migration(store: ReviewStore):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.reviews.schema import Base

    assert "review_regions" in Base.metadata.tables
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
        assert sa.inspect(conn).get_foreign_keys("review_regions")[0]["referred_table"] == "reviews"


# --------------------------------------------------------------------------------------------------
# The case report


def test_the_case_report_outlines_the_reviews_regions_on_the_first_image():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    import pypdfium2 as pdfium

    from core.case_report import CaseReport, render_pdf

    image = np.full((200, 200), 0.5, np.float32)
    drawn = box("missed finding", ((20, 20), (180, 20), (180, 180), (20, 180)))
    on_a_slice = box("other", slice_view="axial", slice_index=3)  # not this image's frame: not drawn
    review = SimpleNamespace(created_at=datetime(2024, 5, 1, tzinfo=timezone.utc), reviewer="reader", verdict="agree",
                             corrected_label="covid", predicted_label="covid", confidence=3, where_wrong=None, note="",
                             slice_view=None, slice_index=None, regions=(drawn, on_a_slice))
    report = CaseReport(title="Chest X-ray", case_hash="f" * 64, images=[("Image", image), ("Copy", image)],
                        probabilities={"COVID-19": 0.7}, reviews=[review], region_frames=[((200, 200), None, None)])
    document = pdfium.PdfDocument(render_pdf(report))
    text = " ".join(document[0].get_textpage().get_text_range().split())
    page = document[0].render(scale=2, rev_byteorder=True).to_numpy()[..., :3].astype(int)  # RGB
    document.close()
    assert "Image · 1 reviewer region(s) outlined" in text and "Copy ·" not in text
    assert "2 region(s): missed finding, other (axial 3)" in text
    magenta = np.abs(page - TAG_COLOURS["missed finding"]).sum(axis=2) < 60
    assert magenta.sum() > 100  # the outline is on the page


def test_volume_regions_land_on_their_slice_of_their_view_per_tag():
    """Each region fills its own slice of its own view in the canonical (z, y, x) volume (the SEG's input)."""
    from core.imaging.volume_views import view_slice
    from core.reviews.regions import regions_in_volume

    shape = (10, 12, 14)
    box = ((2, 3), (6, 3), (6, 5), (2, 5))  # x 2..6, y 3..5 on the slice
    regions = [Region("rectangle", "missed finding", box, slice_view="axial", slice_index=4),
               Region("rectangle", "missed finding", box, slice_view="coronal", slice_index=7),
               Region("rectangle", "other", box, slice_view="sagittal", slice_index=1),
               Region("rectangle", "other", box)]  # no slice: not a volume region, left out
    masks = regions_in_volume(regions, shape)
    assert list(masks) == ["missed finding", "other"] and all(m.shape == shape for m in masks.values())
    flat = regions_mask(regions[:1], (12, 14), binary=True) > 0
    assert np.array_equal(masks["missed finding"][4], flat)  # axial slice 4 is volume[4]
    coronal = view_slice(masks["missed finding"], "coronal", 7)  # shown feet-down: rows are z reversed
    assert np.array_equal(coronal, regions_mask(regions[1:2], coronal.shape, binary=True) > 0)
    assert masks["missed finding"].sum() == flat.sum() + coronal.sum()  # apart: the axial box spans y 3..5, not 7
    sagittal = view_slice(masks["other"], "sagittal", 1)
    assert np.array_equal(sagittal, regions_mask(regions[2:3], sagittal.shape, binary=True) > 0)
    assert masks["other"].sum() == sagittal.sum()
