"""The CT slice page of the real app, really started on the bundled models, driven in Debian's headless Chromium.

Upload a synthetic CT DICOM in Hounsfield units, see P(COVID-19), the infection overlay, the heat map
and the infection burden, change the window, save a review and find exactly that review (task
``ct-slice``) in the Review log's CSV export. A radiograph DICOM is refused with a pointer to the
Chest X-ray page; an 8-bit PNG export is analysed with the "no Hounsfield units" note instead of the
window choice.

The server serves ``weights/`` (fixture ``bundled_weights_dir``; ``CHEST_WEIGHTS_DIR`` overrides it):
the test fails, it does not skip, when that registry lacks the CT slice models, since the CT page
must open on the bundled models.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from core.ct_phantoms import ct_phantom_dicom_bytes, make_ct_phantom
from core.imaging.windowing import LUNG, apply_window
from core.io import load_image
from core.registry import Registry
from tests.browser.conftest import BROWSER_REVIEWER, choose, click_and_settle, goto_signed_in
from tests.core.conftest import build_dataset, gradient, to_bytes

pytestmark = pytest.mark.browser  # fixtures `server`, `browser`, `bundled_weights_dir`: tests/browser/conftest.py

PHANTOM_SEED = 7
REVIEWER = BROWSER_REVIEWER  # reviews carry the login (tests/browser/conftest.py)
WHERE_WRONG = "missed the right posterior ground glass"
INFECTION_CAPTION = "Infection: ground glass (amber), consolidation (red)"  # the multi-class model splits it
HEATMAP_CAPTION = "Heat map (Eq. 1)"
MEDIASTINUM_OPTION = "Mediastinum W400/L40"
NO_HU_NOTE = "No Hounsfield units in this file (an 8-bit export)"  # replaces the window select box
NO_HU_WARNING = "No Hounsfield units: this is an 8-bit exported image"  # core.guard.ct_slice.NO_HU_WARNING


@pytest.fixture(scope="module", autouse=True)
def bundled_ct_classifier(bundled_weights_dir):
    """The CT page must open on the bundled models: fail (not skip) when the registry lacks them."""
    registry = Registry.open(bundled_weights_dir)
    infection = registry.cards("ct-infection-segmentation")
    binary = [card for card in infection if len(card.classes) == 1]
    needed = {
        "a CT lung model (ct-lung-segmentation)": registry.cards("ct-lung-segmentation"),
        "a binary CT infection model (ct-infection-segmentation, one class)": binary,
        "the ground glass / consolidation model (ct-infection-segmentation, three classes)":
            [card for card in infection if card not in binary],
        "a CT classifier (ct-classification)": registry.cards("ct-classification"),
    }
    missing = [what for what, cards in needed.items() if not cards]
    if missing:
        pytest.fail(f"the registry {bundled_weights_dir} lacks " + "; ".join(missing)
                    + ": the CT slice page cannot open on the bundled models")
    return registry.cards("ct-classification")[0]  # the one the CT slice pipeline serves


def _no_trace(page) -> None:
    assert "Traceback" not in page.content()
    assert page.locator("[data-testid=stException]").count() == 0


def _slice_image_src(page) -> str:
    """The media URL of the "Slice" panel (a new URL when the shown pixels change)."""
    panel = page.locator("[data-testid=stImage]").filter(has=page.get_by_text("Slice", exact=True))
    return panel.locator("img").first.get_attribute("src")


def _open_ct_page(browser, server, **options):
    page = browser.new_page(**options)
    page.set_default_timeout(180_000)  # the first analysis loads the CT models on a busy 2-core machine
    goto_signed_in(page, f"{server}/ct_slice")
    page.get_by_role("heading", level=1, name="CT slice").wait_for()
    return page


def test_upload_a_ct_dicom_review_it_and_find_it_in_the_log(server, browser, bundled_ct_classifier, tmp_path):
    dicom = ct_phantom_dicom_bytes(make_ct_phantom("covid", seed=PHANTOM_SEED, size=256))
    path = tmp_path / "ct-slice.dcm"
    path.write_bytes(dicom)
    case_hash = load_image(dicom, path.name).case_hash  # what the review log records for this slice
    page = _open_ct_page(browser, server, accept_downloads=True)

    page.locator("input[type=file]").set_input_files(str(path))
    heading = page.get_by_role("heading", name=re.compile(r"^P\(COVID-19\): \d+(\.\d)?%$"))
    heading.wait_for()
    shown_covid = float(re.search(r"([\d.]+)%", heading.inner_text()).group(1)) / 100
    page.get_by_text(INFECTION_CAPTION, exact=True).wait_for()
    page.get_by_text(HEATMAP_CAPTION).wait_for()
    page.get_by_text("Infected lung", exact=True).wait_for()  # the infection burden metric
    page.get_by_text(re.compile(r"^Ground glass: \d+\.\d% of the lung · consolidation: \d+\.\d%$")).wait_for()
    page.locator("[data-testid=stPlotlyChart]").first.wait_for()  # the probabilities chart
    assert page.locator("[data-testid=stImage]").count() == 4  # slice, lung mask, infection, heat map
    assert page.get_by_text(f"{bundled_ct_classifier.name} {bundled_ct_classifier.version}").count() >= 1
    _no_trace(page)

    lung_window = _slice_image_src(page)
    # the select box's input holds the chosen title as its value; during a rerun Streamlit may briefly show the
    # old element beside the new one, hence .first
    window = page.get_by_label("Window", exact=True).first
    expect(window).to_have_value(re.compile(r"^Lung W1500/L-600"), timeout=60_000)
    choose(page, window, MEDIASTINUM_OPTION)
    expect(window).to_have_value(MEDIASTINUM_OPTION, timeout=60_000)
    page.wait_for_function(  # the slice panel shows new pixels: the HU went through the mediastinum window
        "src => [...document.querySelectorAll('[data-testid=stImage] img')].every(img => img.src !== src)"
        " && document.querySelectorAll('[data-testid=stImage] img').length === 4",
        arg=lung_window,
    )
    assert _slice_image_src(page) != lung_window
    heading.wait_for()  # the analysis is kept: no rerun of the models, same result
    _no_trace(page)

    click_and_settle(page, page.get_by_text("disagree", exact=True))
    choose(page, page.get_by_label("The label you believe is right"), "Uncertain")
    page.get_by_label("Where did the model go wrong? (optional)").fill(WHERE_WRONG)
    page.get_by_role("button", name="Save review").click()
    page.get_by_text("Review saved").wait_for()
    _no_trace(page)

    goto_signed_in(page, f"{server}/review_log")
    page.get_by_text("Download CSV").wait_for()
    with page.expect_download() as download:
        page.get_by_text("Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    ours = [row for row in rows if row["task"] == "ct-slice" and row["case_hash"] == case_hash]
    assert len(ours) == 1, rows
    review = ours[0]
    assert review["reviewer"] == REVIEWER
    assert review["verdict"] == "disagree"
    assert review["corrected_label"] == "uncertain"
    assert review["where_wrong"] == WHERE_WRONG
    assert review["model_name"] == bundled_ct_classifier.name
    assert review["model_version"] == bundled_ct_classifier.version
    assert review["predicted_label"] in {"covid", "non-covid"}
    assert float(review["prob_covid"]) == pytest.approx(shown_covid, abs=0.0006)  # the heading rounds to 0.1 %
    page.close()


def test_a_radiograph_dicom_is_refused_with_a_pointer_to_the_xray_page(server, browser, tmp_path):
    path = tmp_path / "radiograph.dcm"
    path.write_bytes(to_bytes(build_dataset(gradient(), modality="CR")))
    page = _open_ct_page(browser, server)
    page.locator("input[type=file]").set_input_files(str(path))
    alert = page.locator("[data-testid=stAlert]").filter(has_text="radiograph")
    alert.wait_for()
    text = alert.inner_text()
    assert "not a CT slice" in text and "Chest X-ray page" in text, text
    assert page.get_by_text("P(COVID-19):").count() == 0
    assert page.get_by_text("Your review").count() == 0
    _no_trace(page)
    page.close()


def test_an_8_bit_png_export_shows_the_no_hu_note_instead_of_the_window(server, browser, tmp_path):
    phantom = make_ct_phantom("covid", seed=PHANTOM_SEED + 1, size=256)
    path = tmp_path / "ct-slice-lung-window.png"
    Image.fromarray(np.round(apply_window(phantom.hu, LUNG) * 255).astype(np.uint8)).save(path)
    page = _open_ct_page(browser, server)
    page.locator("input[type=file]").set_input_files(str(path))
    page.get_by_role("heading", name=re.compile(r"^P\(COVID-19\): ")).wait_for()
    page.locator("[data-testid=stAlert]").filter(has_text=NO_HU_WARNING).wait_for()
    page.get_by_text(NO_HU_NOTE).wait_for()
    assert page.get_by_label("Window", exact=True).count() == 0  # no window select box without HU
    assert page.get_by_label("Level (HU)").count() == 0
    page.get_by_text(INFECTION_CAPTION, exact=True).wait_for()
    page.get_by_text("Infected lung", exact=True).wait_for()
    _no_trace(page)
    page.close()
