"""The real app, really started, driven in Debian's headless Chromium by Playwright.

Upload a synthetic chest X-ray, see the probabilities and the heat map, save a review, and find it
in the Review log's CSV export.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.phantoms import make_phantom
from tests.browser.conftest import BROWSER_REVIEWER, choose, click_and_settle, goto_signed_in

pytestmark = pytest.mark.browser  # fixtures `server` and `browser`: tests/browser/conftest.py


def test_upload_review_and_find_it_in_the_log(server, browser, tmp_path):
    image_path = tmp_path / "chest.png"
    Image.fromarray((make_phantom("covid", seed=11, size=384).pixels * 255).astype(np.uint8)).save(image_path)
    page = browser.new_page(accept_downloads=True)
    page.set_default_timeout(120_000)

    goto_signed_in(page, f"{server}/chest_xray")
    page.get_by_text("Research use only").first.wait_for()
    page.locator("input[type=file]").set_input_files(str(image_path))
    page.get_by_text("Prediction:").wait_for()
    page.get_by_text("Grad-CAM:").wait_for()  # the heat map panel's caption
    assert page.locator("img").count() >= 4  # image, lung mask, Grad-CAM, mask attention
    page.locator("[data-testid=stPlotlyChart]").first.wait_for()  # the probabilities chart
    assert "Traceback" not in page.content()

    click_and_settle(page, page.get_by_text("disagree", exact=True))
    choose(page, page.get_by_label("The label you believe is right"), "Uncertain")
    page.get_by_label("Where did the model go wrong? (optional)").fill("missed the left lower zone")
    page.get_by_role("button", name="Save review").click()
    page.get_by_text("Review saved").wait_for()

    goto_signed_in(page, f"{server}/review_log")
    page.get_by_text("Download CSV").wait_for()
    with page.expect_download() as download:
        page.get_by_text("Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 1
    assert rows[0]["reviewer"] == BROWSER_REVIEWER  # the login, not a typed name
    assert rows[0]["verdict"] == "disagree"
    assert rows[0]["corrected_label"] == "uncertain"
    assert rows[0]["where_wrong"] == "missed the left lower zone"
    page.close()


def test_switching_to_the_covid_cxnet_classifier(server, browser, tmp_path, bundled_weights_dir):
    from core.registry import Registry

    version = Registry.open(bundled_weights_dir).card("covid-cxnet-binary").version
    image_path = tmp_path / "chest.png"
    Image.fromarray((make_phantom("normal", seed=4, size=384).pixels * 255).astype(np.uint8)).save(image_path)
    page = browser.new_page()
    page.set_default_timeout(120_000)
    goto_signed_in(page, f"{server}/chest_xray")
    page.locator("input[type=file]").set_input_files(str(image_path))
    page.get_by_text("Prediction:").wait_for()
    choose(page, page.get_by_label("Classifier"), "covid-cxnet-binary (Normal, COVID-19)")
    page.get_by_text(f"covid-cxnet-binary {version}").first.wait_for()  # the models caption under the result
    page.get_by_text("Grad-CAM:").wait_for()
    assert "Traceback" not in page.content()
    page.close()


def test_bad_upload_shows_a_message_not_a_trace(server, browser, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"this is not an image at all")
    page = browser.new_page()
    page.set_default_timeout(60_000)
    goto_signed_in(page, f"{server}/chest_xray")
    page.locator("input[type=file]").set_input_files(str(bad))
    page.locator("[data-testid=stAlert]").first.wait_for()
    assert "Traceback" not in page.content()
    page.close()
