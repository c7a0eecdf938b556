"""The case PDF (core.case_report), rendered back with PDFium: every page says research use only, the
images, answer, models and reviews are in it."""

from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pypdfium2 as pdfium

from core.case_report import RESEARCH_ONLY, CaseReport, render_pdf
from core.phantoms import make_phantom
from core.viz import heat_overlay, mask_overlay


def review(index: int):
    return SimpleNamespace(created_at=datetime(2024, 5, 1, 9, index, tzinfo=timezone.utc), reviewer=f"reader {index}",
                           verdict="disagree", corrected_label="viral", predicted_label="covid", confidence=4,
                           where_wrong="missed <left> lower lobe & more", note="", slice_view=None, slice_index=None)


def report(reviews=()):
    phantom = make_phantom("covid", seed=3, size=256)
    heat = np.zeros_like(phantom.pixels)
    heat[60:120, 60:120] = 1.0
    card = SimpleNamespace(name="manet-resnet34-ma", version="2.0.0", weights_sha256="ab" * 32)
    return CaseReport(
        title="Chest X-ray", case_hash="f" * 64,
        images=[("Image", phantom.pixels), ("Lung mask", mask_overlay(phantom.pixels, phantom.lung_mask)),
                ("Grad-CAM: COVID-19", heat_overlay(phantom.pixels, heat))],
        probabilities={"COVID-19": 0.7, "Normal": 0.3}, probability_note="calibrated (temperature 1.5 fitted on val)",
        quantities=[("Lung area (share of the image)", "31.0%")], models=[card], warnings=["a warning"], reviews=reviews)


def pages_text(pdf: bytes) -> list[str]:
    document = pdfium.PdfDocument(pdf)
    try:
        return [document[i].get_textpage().get_text_range() for i in range(len(document))]
    finally:
        document.close()


def test_every_page_says_research_only_and_the_content_is_there():
    pdf = render_pdf(report([review(i) for i in range(40)]), created=datetime(2024, 5, 2, tzinfo=timezone.utc))
    assert pdf.startswith(b"%PDF")
    texts = pages_text(pdf)
    assert len(texts) >= 2  # forty reviews run onto a second page
    for text in texts:
        assert RESEARCH_ONLY in " ".join(text.split())
    everything = " ".join(" ".join(texts).split())
    for expected in ("Chest X-ray: case report", "COVID-19 70.0%", "manet-resnet34-ma", "ab" * 32, "reader 39",
                     "missed <left> lower lobe & more", "Lung area (share of the image) 31.0%", "calibrated (temperature 1.5",
                     "Warning: a warning", "generated 2024-05-02 00:00 UTC"):
        assert expected in everything, expected


def test_the_images_are_drawn_with_their_overlays():
    document = pdfium.PdfDocument(render_pdf(report()))
    page = document[0].render(scale=1).to_numpy()[..., :3].astype(int)
    document.close()
    assert page.std() > 10  # not a blank page
    reddish = (page[..., 0] - page[..., 2] > 80).mean()
    assert reddish > 0.002  # the Grad-CAM's hot colours made it onto the page
    assert "No review saved for this case yet." in " ".join(" ".join(pages_text(render_pdf(report()))).split())
