"""The CT volume page of the real app, really started, driven in Debian's headless Chromium.

Upload a synthetic chest CT volume as a NIfTI file (written RAS, so the loader must reorient it), see
the three views and the lung and infection volumes, move the axial slider, save a review that records
that axial slice, and find exactly that review (task ``ct-volume``, slice and view) in the Review
log's CSV export. A NIfTI file of a few slices is refused with a specific message.

The server serves the bundled CT lung and infection models (``weights/``, or ``CHEST_WEIGHTS_DIR``)
and paper 004's two 3D classifiers: the bundled ones, or toy ones beside the bundled CT models when
the bundled registry has none (``tests/ct_volume_registry.py``).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest

from core.ct_volume_phantoms import DEMO_SHAPE, DEMO_SPACING_MM, make_ct_volume
from core.guard.ct_volume import check_ct_volume
from core.io import load_volume
from core.io.nifti import nifti_bytes
from tests.browser.conftest import (
    BROWSER_REVIEWER,
    choose,
    click_and_settle,
    goto_signed_in,
    running_app,
    wait_until_settled,
)
from tests.ct_volume_registry import ct_volume_registry

pytestmark = pytest.mark.browser  # fixtures `browser`, `bundled_weights_dir`: tests/browser/conftest.py

REVIEWER = BROWSER_REVIEWER  # reviews carry the login (tests/browser/conftest.py)
WHERE_WRONG = "missed the left lower lobe ground glass"
VIEW_CAPTION = re.compile(r"^(Axial|Coronal|Sagittal) \d+ — top: ")


@pytest.fixture(scope="module")
def volume_server(tmp_path_factory, bundled_weights_dir):
    weights = ct_volume_registry(bundled_weights_dir, tmp_path_factory.mktemp("ct-volume-registry"))
    with running_app(tmp_path_factory.mktemp("app"), weights) as url:
        yield url


def _no_trace(page) -> None:
    assert "Traceback" not in page.content()
    assert page.locator("[data-testid=stException]").count() == 0


def _view_captions(page) -> list[str]:
    captions = page.locator("[data-testid=stImage]").filter(has_text=VIEW_CAPTION)
    return [text.strip() for text in captions.all_inner_texts()]


def _open_page(browser, server, **options):
    page = browser.new_page(viewport={"width": 1600, "height": 1200}, **options)
    page.set_default_timeout(240_000)  # the first analysis loads the CT models on a busy 2-core machine
    goto_signed_in(page, f"{server}/ct_volume")
    page.get_by_role("heading", level=1, name="CT volume").wait_for()
    return page


def test_upload_a_nifti_volume_scroll_review_a_slice_and_find_it_in_the_log(volume_server, browser, tmp_path):
    phantom = make_ct_volume("covid", 3, shape=DEMO_SHAPE, spacing_mm=DEMO_SPACING_MM, infection_ratio=0.05)
    data = nifti_bytes(phantom.hu, phantom.spacing_mm, orientation="RAS")
    path = tmp_path / "chest-ct.nii"
    path.write_bytes(data)
    case_hash = check_ct_volume(load_volume([(path.name, data)])).case_hash  # what the review log records
    page = _open_page(browser, volume_server, accept_downloads=True)

    page.locator("input[type=file]").set_input_files(str(path))
    page.get_by_role("heading", name="Lungs and infection").wait_for()
    page.get_by_role("heading", name=re.compile(r"^P\(COVID-19\): \d+(\.\d)?% \(dual sampling\)$")).wait_for()
    page.get_by_text("Right lung", exact=True).wait_for()  # the metrics of the facts column
    page.get_by_text("Left lung", exact=True).wait_for()
    page.get_by_text(re.compile(r"^Size group: (small|medium|large)")).wait_for()
    assert [c.split(" — ")[0] for c in _view_captions(page)] == ["Axial 40", "Coronal 80", "Sagittal 80"]
    alerts = page.locator("[data-testid=stAlert]")
    assert alerts.filter(has_text="SYNTHETIC DEMO VOLUME").count() == 0  # an upload, not a demo volume
    alerts.filter(has_text="trained on synthetic volumes only").wait_for()  # the classifiers' banner
    wait_until_settled(page)
    _no_trace(page)

    axial = page.get_by_role("slider", name="Axial slice (0 = feet)")
    for index in (41, 42, 43):  # one key press per rerun: the rerun redraws the slider and can take its focus
        axial.focus()
        axial.press("ArrowRight")
        page.wait_for_function(
            "index => [...document.querySelectorAll('[data-testid=stImage]')]"
            ".some(e => e.innerText.startsWith(`Axial ${index} — `))", arg=index)
        wait_until_settled(page)
    assert _view_captions(page)[0].startswith("Axial 43 — top: anterior, left: patient's right")
    page.screenshot(path=str(tmp_path / "ct-volume-page.png"), full_page=True)
    _no_trace(page)

    click_and_settle(page, page.get_by_text("disagree", exact=True))
    choose(page, page.get_by_label("The label you believe is right"), "Uncertain")
    page.get_by_label("Where did the model go wrong? (optional)").fill(WHERE_WRONG)
    choose(page, page.get_by_label(re.compile("^Slice where the model went wrong")), "axial view, slice 43")
    page.get_by_role("button", name="Save review").click()
    page.get_by_text("Review saved").wait_for()
    _no_trace(page)

    goto_signed_in(page, f"{volume_server}/review_log")
    page.get_by_text("Download CSV").wait_for()
    with page.expect_download() as download:
        page.get_by_text("Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    ours = [row for row in rows if row["task"] == "ct-volume" and row["case_hash"] == case_hash]
    assert len(ours) == 1, rows
    review = ours[0]
    assert (review["slice_view"], review["slice_index"]) == ("axial", "43")
    assert (review["reviewer"], review["verdict"], review["corrected_label"]) == (REVIEWER, "disagree", "uncertain")
    assert review["where_wrong"] == WHERE_WRONG
    assert "+" in review["model_name"]  # the dual-sampling fusion: both models named
    assert {"prob_cap", "prob_covid"} <= set(review)
    page.close()


def test_a_nifti_of_a_few_slices_is_refused_with_a_specific_message(volume_server, browser, tmp_path):
    hu = np.full((4, 64, 64), -1000, dtype=np.float32)
    path = tmp_path / "four-slices.nii"
    path.write_bytes(nifti_bytes(hu, (2.5, 1.0, 1.0)))
    page = _open_page(browser, volume_server)
    page.locator("input[type=file]").set_input_files(str(path))
    alert = page.locator("[data-testid=stAlert]").filter(has_text="axial slices")
    alert.wait_for()
    assert "only 4 axial slices" in alert.inner_text()
    assert page.get_by_text("Lungs and infection").count() == 0
    assert page.get_by_text("Your review").count() == 0
    _no_trace(page)
    page.close()
