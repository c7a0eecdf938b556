"""A PDF per case: the images as the page shows them (overlays drawn), the model's answer, the quantities, the
models with their versions and weight hashes, and the case's reviews (with the regions reviewers drew outlined
on the images, in their tags' colours). "Research use only, not for clinical
use" is on every page.

The page hands over what it displays (``CaseReport``), so the PDF shows what the reviewer saw; ReportLab lays
it out. Nothing identifying goes in: the pixels the app already shows (de-identified by ``core.io``), the case
hash, model names, the reviews as saved (reviewer names and their text). No Streamlit here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Image as PdfImage
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

RESEARCH_ONLY = "Research use only, not for clinical use. Outputs are model estimates, not diagnoses."
IMAGE_WIDTH_MM = 85  # two images side by side on A4
IMAGE_MAX_PX = 768  # enough for print at that width; keeps a report small


@dataclass
class CaseReport:
    title: str  # e.g. "Chest X-ray"
    case_hash: str
    images: list[tuple[str, np.ndarray]]  # (caption, grey [0, 1] or RGB uint8), as the page shows them
    probabilities: dict[str, float]  # class title -> probability
    probability_note: str = ""  # calibrated or not (core.calibration.probability_note)
    quantities: list[tuple[str, str]] = field(default_factory=list)  # (what, value as displayed)
    models: list = field(default_factory=list)  # ModelCards: name, version, weights_sha256
    warnings: list[str] = field(default_factory=list)
    reviews: Sequence = ()  # core.reviews.Review of this case
    # Per image (same order), where the reviews' regions are outlined on it: None, or (image_shape (rows, columns)
    # of the regions' pixel frame, slice_view, slice_index); the 2-D pages pass (pixels.shape, None, None) first.
    region_frames: Sequence = ()


def _with_regions(report: CaseReport) -> list[tuple[str, np.ndarray]]:
    """The report's images, the reviews' regions outlined (in their tag colours) on those with a region frame."""
    from core.reviews.regions import outline_regions, regions_on_slice

    drawn = [region for review in report.reviews for region in getattr(review, "regions", ())]
    images = list(report.images)
    for number, frame in enumerate(report.region_frames):
        if frame is None or number >= len(images):
            continue
        image_shape, slice_view, slice_index = frame
        regions = regions_on_slice(drawn, slice_view, slice_index)
        if regions:
            caption, picture = images[number]
            images[number] = (f"{caption} · {len(regions)} reviewer region(s) outlined",
                              outline_regions(picture, regions, image_shape))
    return images


def _regions_text(regions) -> str:
    """E.g. "2 region(s): missed finding, other (axial 40)"."""
    if not regions:
        return ""
    tags = [r.tag + (f" ({r.slice_view} {r.slice_index})" if r.slice_view else "") for r in regions]
    return f"{len(regions)} region(s): " + ", ".join(tags)


def _png(picture: np.ndarray) -> io.BytesIO:
    array = np.asarray(picture)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(array)
    image.thumbnail((IMAGE_MAX_PX, IMAGE_MAX_PX))
    out = io.BytesIO()
    image.save(out, format="PNG")
    out.seek(0)
    return out


def _figure(caption: str, picture: np.ndarray, styles) -> list:
    height, width = np.asarray(picture).shape[:2]
    shown_w = IMAGE_WIDTH_MM * mm
    return [PdfImage(_png(picture), width=shown_w, height=shown_w * height / width),
            Paragraph(escape(caption), styles["Italic"])]


def _table(rows: list[list], widths: list[float] | None = None) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT", repeatRows=1)
    table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold"), ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
    ]))
    return table


def _cell(text: str, styles) -> Paragraph:
    return Paragraph(escape(str(text)), styles["BodyText"])


def _footer(created: str):
    def draw(canvas, document) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica-Bold", 8)
        canvas.setFillColor(colors.HexColor("#b00020"))
        canvas.drawString(15 * mm, 10 * mm, RESEARCH_ONLY)
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.black)
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {document.page} · generated {created}")
        canvas.restoreState()
    return draw


def render_pdf(report: CaseReport, created: datetime | None = None) -> bytes:
    """The report as PDF bytes (A4)."""
    styles = getSampleStyleSheet()
    created_text = (created or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    story: list = [Paragraph(escape(f"{report.title}: case report"), styles["Title"]),
                   Paragraph(f"<b>{escape(RESEARCH_ONLY)}</b>", styles["BodyText"]),
                   Paragraph(f"Case {escape(report.case_hash[:16])} (SHA-256 of the de-identified pixels)", styles["BodyText"]),
                   Spacer(1, 4 * mm)]
    for warning in report.warnings:
        story.append(Paragraph(f"Warning: {escape(warning)}", styles["BodyText"]))
    figures = [_figure(caption, picture, styles) for caption, picture in _with_regions(report)]
    for start in range(0, len(figures), 2):
        pair = figures[start:start + 2]
        story.append(Table([pair], colWidths=[(IMAGE_WIDTH_MM + 5) * mm] * len(pair), hAlign="LEFT"))
    if report.probabilities:
        rows = [["class", "probability"]] + [[name, f"{p:.1%}"] for name, p in
                                              sorted(report.probabilities.items(), key=lambda kv: -kv[1])]
        story += [Paragraph("Model output", styles["Heading2"]), _table(rows, [60 * mm, 30 * mm])]
        if report.probability_note:
            story.append(Paragraph(escape(f"Probabilities: {report.probability_note}."), styles["Italic"]))
    if report.quantities:
        story += [Paragraph("Measurements", styles["Heading2"]),
                  _table([["quantity", "value"]] + [[what, value] for what, value in report.quantities], [90 * mm, 60 * mm])]
    if report.models:
        rows = [["model", "version", "weights SHA-256"]] + [[c.name, c.version, c.weights_sha256] for c in report.models]
        story += [Paragraph("Models", styles["Heading2"]), _table(rows, [55 * mm, 18 * mm, 107 * mm])]
    story.append(Paragraph("Reviews", styles["Heading2"]))
    if report.reviews:
        rows = [["saved (UTC)", "reviewer", "verdict", "reader's label", "confidence", "where wrong / note"]]
        for r in report.reviews:
            detail = " · ".join(filter(None, [r.where_wrong or "", r.note,
                                              f"{r.slice_view} slice {r.slice_index}" if r.slice_view else "",
                                              _regions_text(getattr(r, "regions", ()))]))
            rows.append([r.created_at.strftime("%Y-%m-%d %H:%M"), _cell(r.reviewer, styles), r.verdict,
                         r.corrected_label or r.predicted_label, str(r.confidence), _cell(detail, styles)])
        story.append(_table(rows, [28 * mm, 28 * mm, 18 * mm, 25 * mm, 18 * mm, 63 * mm]))
    else:
        story.append(Paragraph("No review saved for this case yet.", styles["BodyText"]))
    out = io.BytesIO()
    document = SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                                 bottomMargin=18 * mm, title=f"{report.title} case report", author="chest imaging review",
                                 subject=RESEARCH_ONLY)
    footer = _footer(created_text)
    document.build([KeepTogether(story[:4]), *story[4:]], onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
