"""Regions on the pages (AppTest): what the drawing canvas sends back is tagged, saved with the review in the
image's pixels (a CT volume's: the drawn slice's voxel grid, with its view and index), offered as a mask PNG,
and shown again, on request, when the case is reviewed again.

AppTest cannot drag a mouse, so ``streamlit_drawable_canvas.st_canvas`` is replaced by a stand-in that
answers a rectangle over the middle of whatever canvas the page asked for (the real canvas in Chromium:
tests/browser/test_regions_in_chromium.py).
"""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.reviews import ReviewStore
from core.reviews.regions import TAG_COLOURS

REPO = Path(__file__).resolve().parents[2]


class FakeCanvas:
    """Stands in for ``st_canvas``: a rectangle from 1/4 to 3/4 of the canvas each way, no stroke."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.draw = True

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        width, height = kwargs["width"], kwargs["height"]
        rect = {"type": "Rect", "left": width / 4, "top": height / 4, "width": width / 2, "height": height / 2,
                "originX": "left", "originY": "top", "strokeWidth": 0}
        return SimpleNamespace(json_data={"version": "7.4.0", "objects": [rect] if self.draw else []})


@pytest.fixture
def canvas(monkeypatch):
    """The stand-in, as the module the pages import (the real one registers its component on import)."""
    fake = FakeCanvas()
    module = types.ModuleType("streamlit_drawable_canvas")
    module.st_canvas = fake
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", module)
    return fake


@pytest.fixture
def db(monkeypatch, tmp_path, bundled_weights_dir) -> Path:
    import streamlit as st

    monkeypatch.setenv("CHEST_REVIEW_DB", str(tmp_path / "reviews.sqlite"))
    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(bundled_weights_dir))
    st.cache_resource.clear()
    yield tmp_path / "reviews.sqlite"
    st.cache_resource.clear()


def middle_square(rows: int, columns: int) -> tuple:
    left, top, right, bottom = columns / 4, rows / 4, 3 * columns / 4, 3 * rows / 4
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def test_xray_region_is_tagged_saved_offered_as_a_mask_and_shown_again_on_request(db, canvas):
    from core.phantoms import make_phantom

    rows, columns = make_phantom("tb", seed=0).pixels.shape
    app = AppTest.from_file(str(REPO / "pages" / "chest_xray.py"), default_timeout=180).run()
    app.radio[0].set_value("Synthetic demo case").run()
    app.selectbox(key="phantom_label").set_value("tb").run()
    assert not app.exception and not canvas.calls  # no canvas until the reviewer asks to draw
    app.toggle(key="region_draw_cxr").set_value(True).run()
    (tag_box,) = [s for s in app.selectbox if s.label == "Region 1 (rectangle)"]
    assert tag_box.value == "missed finding"  # the "Tag of the next region" when it was drawn
    tag_box.set_value("wrong location").run()
    assert [b.label for b in app.get("download_button")] == ["Download the regions mask (PNG)", "Download PDF report"]
    app.text_input[0].input("Dr Apptest")
    app.button[0].click().run()
    assert not app.exception
    assert any("Review saved with 1 region(s)" in s.value for s in app.success), [e.value for e in app.error]
    (review,) = ReviewStore(f"sqlite:///{db}").current_reviews()
    (region,) = review.regions
    assert (region.kind, region.tag, region.slice_view) == ("rectangle", "wrong location", None)
    np.testing.assert_allclose(region.points, middle_square(rows, columns), atol=0.01)

    # The next reader: the earlier region is hidden (blind) until the toggle is on, then outlined in its tag colour.
    canvas.draw = False
    app.run()
    assert not app.toggle(key="region_earlier_cxr").value
    blind = np.asarray(Image.open(io.BytesIO(canvas.calls[-1]["background_image"])).convert("RGB")).astype(int)
    app.toggle(key="region_earlier_cxr").set_value(True).run()
    shown = np.asarray(Image.open(io.BytesIO(canvas.calls[-1]["background_image"])).convert("RGB")).astype(int)
    colour = np.abs(shown - TAG_COLOURS["wrong location"]).sum(axis=2) < 90
    assert colour.sum() > 100 and (np.abs(blind - TAG_COLOURS["wrong location"]).sum(axis=2) < 90).sum() == 0


def test_ct_volume_region_is_in_the_drawn_slices_voxels_with_its_view_and_index(db, canvas, tmp_path_factory,
                                                                                 bundled_weights_dir, monkeypatch):
    import streamlit as st

    from core.ct_volume_phantoms import DEMO_SHAPE
    from tests.ct_volume_registry import ct_volume_registry

    weights = ct_volume_registry(bundled_weights_dir, tmp_path_factory.mktemp("reg"))
    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(weights))
    st.cache_resource.clear()
    app = AppTest.from_file(str(REPO / "pages" / "ct_volume.py"), default_timeout=300).run()
    app.radio(key="cv_source").set_value("Synthetic demo volume").run()
    assert not app.exception, app.exception
    app.slider(key="cv_sagittal").set_value(70).run()
    app.toggle(key="region_draw_ct-volume").set_value(True).run()
    app.selectbox(key="cv_draw_view").set_value("sagittal").run()
    assert canvas.calls[-1]["key"].endswith("_sagittal_70")
    app.text_input[0].input("Dr Volume")
    app.button[0].click().run()
    assert not app.exception
    assert any("Review saved with 1 region(s)" in s.value for s in app.success), [e.value for e in app.error]
    (review,) = ReviewStore(f"sqlite:///{db}").current_reviews()
    (region,) = review.regions
    assert (region.slice_view, region.slice_index) == ("sagittal", 70)
    depth, height, _ = DEMO_SHAPE  # a sagittal slice: rows along z (head up), columns along y
    np.testing.assert_allclose(region.points, middle_square(depth, height), atol=0.01)
