"""Issue 11's whole flow in the real app, in Debian's headless Chromium: two readers and one case.

Reader one signs in, uploads a radiograph, draws a region on it and saves a review. Reader two signs in (another
browser context: another person), finds the case on the Worklist under "not yet reviewed by me", opens it and reads
it blind (reader one's review and region stay hidden), disagrees and saves. The Agreement page's Cohen's kappa for
the two readers changes (two earlier cases both read were seeded), and the case's PDF downloads with both reviews.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from core.classes import MANET_CLASSES
from core.phantoms import make_phantom
from core.reviews import ReviewInput, ReviewStore
from tests.browser.conftest import (
    BROWSER_REVIEWER,
    choose,
    click_and_settle,
    goto_signed_in,
    running_app,
    wait_until_settled,
)
from tests.sign_in import ensure_user

pytestmark = pytest.mark.browser  # fixtures `browser`, `bundled_weights_dir`: tests/browser/conftest.py

SECOND = "dr.second"
KAPPA = f"Cohen's kappa: {BROWSER_REVIEWER}, {SECOND}"


def seed_two_shared_cases(url: str) -> None:
    """Two earlier cases both readers read alike (covid; viral), so the kappa is 1.00 before (p_o 1, p_e 1/2)."""
    probabilities = dict.fromkeys(MANET_CLASSES, 0.1) | {"covid": 0.6}
    with ReviewStore(url) as store:
        for case, correction in (("earlier-1", None), ("earlier-2", "viral")):
            case_hash = hashlib.sha256(case.encode()).hexdigest()
            for reader in (BROWSER_REVIEWER, SECOND):
                store.add_review(ReviewInput(
                    reviewer=reader, case_hash=case_hash, model_name="manet-resnet34-ma", model_version="2.0.0",
                    weights_sha256="0" * 64, predicted_probabilities=probabilities, predicted_label="covid",
                    verdict="disagree" if correction else "agree", corrected_label=correction, confidence=3))


def kappa_shown(page) -> tuple[str, str]:
    """(kappa value, its caption) of the two readers on the Agreement page."""
    page.get_by_role("link", name="Agreement").click()
    metric = page.locator("[data-testid=stMetric]").filter(has_text=KAPPA)
    metric.wait_for()
    value = metric.locator("[data-testid=stMetricValue]").inner_text()
    caption = page.get_by_text(re.compile(r"^\d+ cases · 95 % interval")).first.inner_text()
    return value, caption


def test_two_readers_one_case_blind_second_read_kappa_and_pdf(browser, tmp_path, bundled_weights_dir):
    url = f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    ensure_user(url, SECOND)
    seed_two_shared_cases(url)
    image_path = tmp_path / "chest.png"
    Image.fromarray((make_phantom("covid", seed=21, size=384).pixels * 255).astype(np.uint8)).save(image_path)

    with running_app(tmp_path, bundled_weights_dir) as server:
        first = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        first.set_default_timeout(180_000)
        goto_signed_in(first, f"{server}/chest_xray", BROWSER_REVIEWER)
        first.locator("input[type=file]").set_input_files(str(image_path))
        first.get_by_text("Prediction:").wait_for()
        first.get_by_text("Draw regions (optional)").click()
        canvas = first.locator("canvas.upper-canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        first.mouse.move(box["x"] + 120, box["y"] + 100)
        first.mouse.down()
        first.mouse.move(box["x"] + 260, box["y"] + 240, steps=8)
        first.mouse.up()
        first.get_by_text("Region 1 (rectangle)").wait_for()
        first.get_by_role("button", name="Save review").click()
        first.get_by_text("Review saved with 1 region(s)").wait_for()
        before, before_caption = kappa_shown(first)
        assert before_caption.startswith("2 cases") and before == "1.00"

        second = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()
        second.set_default_timeout(180_000)
        goto_signed_in(second, f"{server}/worklist", SECOND)
        second.get_by_text("Not yet reviewed by me", exact=True).click()
        second.get_by_text(re.compile(r"^1 of 1 stored cases")).wait_for()  # reader one's case, kept when saved
        second.locator("[data-testid=stButton]").get_by_role("button", name="Open").first.click()
        second.get_by_text("Prediction:").wait_for()
        second.get_by_text("Earlier reads of this case").wait_for()
        blind_toggle = second.get_by_text(re.compile(r"Show other readers' reviews"))
        blind_toggle.wait_for()
        text = second.locator("[data-testid=stMain]").inner_text()
        assert BROWSER_REVIEWER not in text  # blind: whose read, what they said and drew stay hidden
        click_and_settle(second, second.get_by_text("disagree", exact=True))
        choose(second, second.get_by_label("The label you believe is right"), "Uncertain")
        second.get_by_role("button", name="Save review").click()
        second.get_by_text("Review saved").wait_for()
        wait_until_settled(second)  # the PDF button of this run, made after the save, not the one drawn before it

        pdf_button = second.get_by_role("button", name="Download PDF report")
        expect(pdf_button).to_have_count(1)  # the rerun after saving has finished (no stale copy left)
        with second.expect_download() as download:
            pdf_button.click()
        pdf = Path(download.value.path()).read_bytes()
        assert "Traceback" not in second.content()

        after, after_caption = kappa_shown(second)
        assert after_caption.startswith("3 cases")
        assert after != before, (before, after)

    assert pdf.startswith(b"%PDF")
    import pypdfium2

    document = pypdfium2.PdfDocument(io.BytesIO(pdf))
    words = " ".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    assert "Research use only" in words and BROWSER_REVIEWER in words and SECOND in words
    with ReviewStore(url) as store:
        reviews = [r for r in store.current_reviews() if len(r.regions) or r.reviewer == SECOND and r.corrected_label == "uncertain"]
    assert {r.reviewer for r in reviews} == {BROWSER_REVIEWER, SECOND}
