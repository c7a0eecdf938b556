"""Resources shared by the pages, created once per server process (``st.cache_resource``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from core.errors import ChestReviewError
from core.faithfulness import READING as FAITHFULNESS_READING
from core.registry import Registry
from core.settings import weights_dir

RESEARCH_ONLY = "Research use only — not for clinical use. Outputs are model estimates, not diagnoses."


@st.cache_resource(show_spinner="Loading the model registry…")
def registry() -> Registry:
    return Registry.open(weights_dir())


@st.cache_resource(show_spinner="Loading the chest X-ray models…")
def cxr_pipeline(classifier: str | None = None):
    """The pipeline serving ``classifier`` (a registry card name; None: the registry's default)."""
    from core.pipelines.cxr import CxrPipeline

    return CxrPipeline(registry(), classifier=classifier)


def show_model_card(card, heading: bool = True) -> None:
    """A model card (``core.model_card``) and, for a calibrated classifier, its reliability diagram on test."""
    from core.model_card import card_markdown
    from core.viz import reliability_figure

    st.markdown((f"#### {card.name} {card.version}\n\n" if heading else "") + card_markdown(card))
    figure = reliability_figure(card.calibration) if card.calibration else None
    if figure is not None:
        st.plotly_chart(figure, width="stretch", key=f"reliability-{card.name}-{card.version}-{heading}")


def show_probability_note(card) -> None:
    """Under the probabilities: whether they are calibrated (temperature fitted on val) or the network's own."""
    from core.calibration import probability_note

    st.caption(f"Probabilities: {probability_note(card)}.")


def show_faithfulness(panel, scores: dict | None) -> None:
    """Under a heat map: how far the prediction rests on the highlighted region (``core.faithfulness``)."""
    if scores is None:
        return
    if scores.get("deletion_score") is None:
        panel.caption("The heat map is zero everywhere: no highlighted region to score.")
        return
    panel.caption(f"Deletion score **{scores['deletion_score']:+.3f}** · in-lung share **{scores['in_lung_share']:.0%}**",
                  help=FAITHFULNESS_READING)
    panel.caption("Deletion score near 0: the prediction does not depend on the highlighted region more than on "
                  "random pixels; a low in-lung share: the map looks outside the lungs.")


def show_error(error: ChestReviewError) -> None:
    """Every expected failure reaches the user as one clear sentence, never as a stack trace."""
    st.error(str(error), icon="🚫")


@st.cache_resource(show_spinner=False)
def _review_store(url: str):
    from core.reviews import ReviewStore

    return ReviewStore(url)  # a ReviewLogError is not cached: the next rerun tries again


def review_store():
    """The review log of ``core.settings.review_db_url()``, one store (one connection pool) per URL."""
    from core.settings import review_db_url

    return _review_store(review_db_url())


@st.cache_resource(show_spinner=False)
def _user_store(url: str):
    from core.auth import UserStore

    return UserStore(_review_store(url))  # the review log's engine: one database, one pool


def user_store():
    """The user accounts (``core.auth.UserStore``) in the review log's database."""
    from core.settings import review_db_url

    return _user_store(review_db_url())


SESSION_KEY = "auth_session"  # st.session_state: the core.auth.Session of this browser tab
SIGN_OUT_NOTICE_KEY = "auth_notice"  # st.session_state: why the last session ended, shown on the sign-in form


def current_user():
    """The signed-in, active ``core.auth.User`` of this browser tab, or None.

    Checked on every script run: an expired session (idle or too old, ``core.auth.SessionPolicy``) or
    an account disabled since sign-in ends here; otherwise the action moves the idle deadline. The
    role is read from the database each time, so an admin's change applies at the user's next click.
    """
    from datetime import datetime, timezone

    from core.auth import SessionPolicy, expiry_message, session_expiry, touched

    session = st.session_state.get(SESSION_KEY)
    if session is None:
        return None
    now = datetime.now(timezone.utc)
    policy = SessionPolicy.from_settings()
    reason = session_expiry(session, now, policy)
    user = None if reason else user_store().active_user(session.username)
    if user is None:
        sign_out(expiry_message(reason, policy) if reason else "Your account is disabled; ask an administrator.")
        return None
    st.session_state[SESSION_KEY] = touched(session, now)
    return user


def current_reviewer() -> str | None:
    """The name a review is saved under: the signed-in username (None when nobody is signed in)."""
    user = current_user()
    return user.username if user is not None else None


def sign_out(notice: str | None = None) -> None:
    """End this tab's session; ``notice`` is shown once on the sign-in form."""
    st.session_state.pop(SESSION_KEY, None)
    if notice:
        st.session_state[SIGN_OUT_NOTICE_KEY] = notice


@st.cache_resource(show_spinner="Loading the CT slice models…")
def ct_slice_pipeline():
    from core.pipelines.ct_slice import CtSlicePipeline

    return CtSlicePipeline(registry())


@st.cache_resource(show_spinner=False)
def image_kind_gate():
    """The registry's image-kind gate, or None when the registry has none (then only metadata and pixel rules apply)."""
    from core.guard.image_kind import open_gate

    return open_gate(registry())


def guard_chest_xray(study):
    """The X-ray page's checks: DICOM metadata and pixel rules, then the image-kind gate."""
    from core.guard import check_chest_xray
    from core.guard.image_kind import check_image_kind

    study, gate = check_chest_xray(study), image_kind_gate()
    return check_image_kind(study, "chest-xray", gate) if gate else study


def guard_ct_slice(study):
    """The CT slice page's checks: DICOM metadata, HU and pixel rules, then the image-kind gate."""
    from core.guard import check_ct_slice
    from core.guard.image_kind import check_image_kind

    study, gate = check_ct_slice(study), image_kind_gate()
    return check_image_kind(study, "chest-ct", gate) if gate else study


def ct_slice_demo_study(label: str, seed: int):
    from core.ct_phantoms import make_ct_phantom

    return make_ct_phantom(label, seed=seed).to_study()


@st.cache_resource(show_spinner="Loading the CT volume models…")
def ct_volume_pipeline():
    from core.pipelines.ct_volume import CtVolumePipeline

    return CtVolumePipeline(registry())


@dataclass(frozen=True)
class OpenedVolume:
    """A read and guarded CT volume with its case hash (hashing a 512 x 512 x 400 volume takes a second: once)."""

    volume: Any  # core.io.volume.Volume
    case_hash: str


def _open_volume_once(source_key, read) -> OpenedVolume:
    """The volume of ``source_key`` (the uploaded files, or a demo case), read, guarded and hashed once per session.

    A refusal is kept too, so a bad upload is not read again on every rerun. Only the current volume is held.
    """
    held = st.session_state.get("ct_volume_opened")
    if held is None or held[0] != source_key:
        from core.guard.ct_volume import check_ct_volume

        try:
            volume = check_ct_volume(read())
            held = (source_key, OpenedVolume(volume, volume.case_hash))
        except ChestReviewError as error:
            held = (source_key, error)
        st.session_state["ct_volume_opened"] = held
    if isinstance(held[1], ChestReviewError):
        raise held[1]
    return held[1]


def uploaded_ct_volume(uploads) -> OpenedVolume:
    """The volume of Streamlit's uploaded files (one NIfTI, one zip, or the DICOM files of one series)."""
    from core.io import load_volume

    key = ("upload", tuple((upload.file_id, upload.size) for upload in uploads))
    return _open_volume_once(key, lambda: load_volume([(upload.name, upload.getvalue()) for upload in uploads]))


def ct_volume_demo(stem: str) -> OpenedVolume:
    """One of ``core.ct_volume_phantoms.DEMO_CASES``, generated as ``write_ct_volume_demo_cases`` writes it."""
    from core.ct_volume_phantoms import DEMO_CASES, DEMO_SHAPE, DEMO_SPACING_MM, make_ct_volume

    _, label, seed, ratio = next(case for case in DEMO_CASES if case[0] == stem)
    return _open_volume_once(("demo", stem), lambda: make_ct_volume(
        label, seed, shape=DEMO_SHAPE, spacing_mm=DEMO_SPACING_MM, infection_ratio=ratio).to_volume())


def analyse_once(state_key: str, case_key, analyse, progress: str, stages: dict[str, str] | None = None):
    """The result for ``case_key``, computed once per session (moving a slider must not rerun the models).

    Only the current case is kept, so a session never holds more than one result of each page. Analyses take a
    slot of ``core.runtime.inference_slots`` (one per two cores by default): when every slot is busy the status
    says how many analyses are ahead, and the models never fight over the cores.
    With ``stages`` (stage name -> title), ``analyse`` is called with a ``progress(stage, fraction)``
    callback that shows one progress bar per stage. A refusal of the input (``UnsupportedInputError``)
    is kept like a result, so a refused volume is not analysed again on every rerun.
    """
    from core.errors import UnsupportedInputError
    from core.runtime import inference_slots

    results = st.session_state.setdefault(state_key, {})
    if case_key not in results:
        with st.status(progress, expanded=stages is not None) as status:
            results.clear()  # the previous case's images and maps go now, not when this one is done

            def waiting(ahead: int) -> None:
                status.update(label=f"Waiting for a free analysis slot: {ahead} analysis(es) ahead of yours…", state="running")

            try:
                with inference_slots().slot(on_wait=waiting):
                    status.update(label=progress, state="running")
                    results[case_key] = analyse(_stage_bars(stages)) if stages is not None else analyse()
            except UnsupportedInputError as refusal:
                results[case_key] = refusal
                status.update(label="Refused", state="error")
            else:
                status.update(label="Analysis done", state="complete", expanded=False)
    if isinstance(results[case_key], UnsupportedInputError):
        raise results[case_key]
    return results[case_key]


def _stage_bars(titles: dict[str, str]):
    """A ``progress(stage, fraction)`` callback drawing one bar per stage, in the order the stages start."""
    bars = {}

    def progress(stage: str, fraction: float) -> None:
        title = titles.get(stage, stage.replace("-", " ").capitalize())
        fraction = min(max(float(fraction), 0.0), 1.0)
        if stage not in bars:
            bars[stage] = st.progress(0.0, text=title)
        bars[stage].progress(fraction, text=f"{title}: {fraction:.0%}")

    return progress


def review_form(study, card, probabilities: dict, predicted_label: str, task: str, slices: dict[str, int] | None = None,
                surface: RegionSurface | None = None) -> None:
    """The review form every page shares; the review records the page's ``task`` (cxr, ct-slice...).

    ``slices`` (the CT volume page): the slice shown now in each view, e.g. ``{"axial": 57, ...}``;
    the reviewer may then record one of them as the slice where the model went wrong.
    ``surface``: what the reviewer may draw regions on (``draw_regions``); they are saved with the review.
    """
    from core.classes import class_title
    from core.reviews import ReviewInput

    st.subheader("Your review")
    reviewer = current_reviewer()  # the login, never a typed name
    if reviewer is None:
        st.info("Sign in to save a review.")
        return
    regions = draw_regions(surface, task, study.case_hash) if surface is not None else ()
    with st.form(f"review_{task}", clear_on_submit=False):
        st.caption(f"Saved under your sign-in: **{reviewer}**")
        verdict = st.radio("Do you agree with the model?", ["agree", "disagree"], horizontal=True)
        labels = list(card.classes) + ["other", "uncertain"]
        corrected = st.selectbox("The label you believe is right", labels, index=labels.index(predicted_label),
                                 format_func=class_title, key="corrected_label")
        confidence = st.slider("Your confidence", 1, 5, 3)
        where_wrong = st.text_input("Where did the model go wrong? (optional)")
        slice_view = _slice_choice(slices) if slices else None
        note = st.text_area("Note (optional, no patient identifiers)")
        submitted = st.form_submit_button("Save review")
    if not submitted:
        return
    try:
        saved = review_store().add_review(ReviewInput(
            reviewer=reviewer, case_hash=study.case_hash, model_name=card.name, model_version=card.version,
            weights_sha256=card.weights_sha256, predicted_probabilities=probabilities, predicted_label=predicted_label,
            verdict=verdict, corrected_label=predicted_label if verdict == "agree" else corrected,
            confidence=confidence, note=note, where_wrong=where_wrong or None, task=task,
            slice_view=slice_view, slice_index=slices[slice_view] if slice_view else None, regions=regions,
        ))
    except ChestReviewError as error:
        show_error(error)
    else:
        drawn = f" with {len(saved.regions)} region(s)" if saved.regions else ""
        st.success(f"Review saved{drawn} (review {saved.review_uid[:8]}, version {saved.version}). See the Review log.")
        keep_case(study, card, probabilities, predicted_label, task)


@dataclass(frozen=True)
class RegionSurface:
    """What a reviewer draws regions on: the page's pictures of one image and that image's own size.

    ``pictures``: caption -> picture (grey [0, 1] or RGB uint8) as the page shows it, any size but the
    image's proportions; the reviewer picks one as the canvas background. ``image_shape``: (rows,
    columns) of the image whose pixels the regions are stored in. A CT volume's surface is one slice:
    ``slice_view`` / ``slice_index`` name it and ``image_shape`` is that slice's voxel grid.
    """

    pictures: dict[str, Any]
    image_shape: tuple[int, int]
    slice_view: str | None = None
    slice_index: int | None = None


CANVAS_MAX_SIDE = 512  # pixels of the drawing canvas's longest side
DRAWING_TOOLS = {"rect": "Rectangle", "polygon": "Polygon (click the corners, then the first one again)",
                 "freedraw": "Freehand outline"}


def draw_regions(surface: RegionSurface, task: str, case_hash: str) -> tuple:
    """Behind a toggle, the drawing canvas over the image, a tag per drawn region, the regions' mask as a PNG download.

    Returns the tagged regions (``core.reviews.Region``) in the image's pixels. Earlier reviews' regions of
    this case (same page) are drawn into the background only when the reviewer asks (blind by default).
    """
    from streamlit_drawable_canvas import st_canvas

    from core.reviews.canvas_drawing import shapes_from_fabric
    from core.reviews.regions import REGION_TAGS, TAG_COLOURS, mask_png, regions_mask

    # Off by default: the canvas reports its background's fit once it has loaded, which reruns the page.
    if not st.toggle("Draw regions (optional): where the model went wrong, each with a tag", key=f"region_draw_{task}",
                     help="Earlier reviews' regions of this case can be shown on the canvas, "
                          "or left hidden for a blind read."):
        return ()
    first, second, third = st.columns(3)
    tool = first.selectbox("Drawing tool", list(DRAWING_TOOLS), format_func=DRAWING_TOOLS.get,
                           key=f"region_tool_{task}")
    next_tag = second.selectbox("Tag of the next region", REGION_TAGS, key=f"region_next_tag_{task}")
    background = third.selectbox("Draw on", list(surface.pictures), key=f"region_background_{task}") \
        if len(surface.pictures) > 1 else next(iter(surface.pictures))
    picture = _with_earlier_regions(surface, task, case_hash, surface.pictures[background])
    canvas_shape = _canvas_shape(picture.shape)
    canvas_key = f"regions_{task}_{case_hash[:16]}_{surface.slice_view}_{surface.slice_index}"
    red, green, blue = TAG_COLOURS[next_tag]  # a region is drawn in the colour of its tag
    drawing = st_canvas(fill_color=f"rgba({red}, {green}, {blue}, 0.15)", stroke_width=2,
                        stroke_color=f"rgb({red}, {green}, {blue})",
                        background_image=_canvas_background(picture, canvas_shape),
                        height=canvas_shape[0], width=canvas_shape[1], drawing_mode=tool, key=canvas_key)
    try:
        shapes = shapes_from_fabric(drawing.json_data, canvas_shape=canvas_shape, image_shape=surface.image_shape)
    except ChestReviewError as error:
        show_error(error)
        return ()
    regions = []
    for number, shape in enumerate(shapes, start=1):
        tag = st.selectbox(f"Region {number} ({shape.kind})", REGION_TAGS, index=REGION_TAGS.index(next_tag),
                           key=f"{canvas_key}_tag_{number}")
        regions.append(shape.tagged(tag, surface.slice_view, surface.slice_index))
    if regions:
        st.download_button("Download the regions mask (PNG)", mask_png(regions_mask(regions, surface.image_shape)),
                           file_name=f"regions-{case_hash[:12]}.png", mime="image/png", key=f"{canvas_key}_mask",
                           help="The image's size; 0 outside the regions, 1 missed finding, 2 false finding, "
                                "3 wrong location, 4 other (later regions on top)")
    return tuple(regions)


def _canvas_shape(picture_shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) of the canvas: the picture's proportions, longest side ``CANVAS_MAX_SIDE``."""
    rows, columns = picture_shape[:2]
    scale = CANVAS_MAX_SIDE / max(rows, columns)
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def _canvas_background(picture, canvas_shape: tuple[int, int]) -> bytes:
    """The picture at the canvas's size as JPEG bytes (small to send on every rerun)."""
    import io

    import numpy as np
    from PIL import Image

    array = np.asarray(picture)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(array).convert("RGB").resize((canvas_shape[1], canvas_shape[0]), Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _with_earlier_regions(surface: RegionSurface, task: str, case_hash: str, picture):
    """``picture`` with the outlines of the regions earlier reviews of this case drew, if the reviewer asks."""
    from core.reviews import ReviewFilters
    from core.reviews.regions import outline_regions, regions_on_slice

    try:
        earlier = review_store().current_reviews(ReviewFilters(task=task, case_hash_prefix=case_hash))
    except ChestReviewError as error:
        show_error(error)
        return picture
    regions = [region for review in earlier
               for region in regions_on_slice(review.regions, surface.slice_view, surface.slice_index)]
    if not regions:
        return picture
    shown = st.toggle(f"Show the regions of earlier reviews of this case ({len(regions)})", value=False,
                      key=f"region_earlier_{task}",
                      help="Off for a blind second read. Shown as outlines in the tag colours, not editable.")
    return outline_regions(picture, regions, surface.image_shape) if shown else picture


def case_report_button(report, task: str) -> None:
    """The case as a PDF (``core.case_report``) with every review saved for it on this page so far."""
    from core.case_report import render_pdf
    from core.reviews import ReviewFilters

    try:
        report.reviews = review_store().current_reviews(ReviewFilters(task=task, case_hash_prefix=report.case_hash))
    except ChestReviewError as error:
        show_error(error)
        report.reviews = []
    st.download_button("Download PDF report", render_pdf(report), file_name=f"case-{report.case_hash[:12]}.pdf",
                       mime="application/pdf", key=f"pdf_{task}",
                       help="Images with overlays, the model's answer, measurements, models and weight hashes, reviews")


def dicom_seg_button(source, result, task: str) -> None:
    """Beside the PDF report: the masks as a DICOM SEG (``core.dicom_seg``), only for a case uploaded as DICOM.

    ``source``: the page's Study, or its OpenedVolume. The signed-in reviewer's saved regions of this case go in
    too, one MANUAL segment per tag (a CT volume's on the slices they were drawn on). What can fail is checked now
    (``check_exportable``, shown as a caption); the SEG and the region masks are built when the button is clicked
    (a volume's take seconds), so moving a slider does not rebuild them.
    """
    from core.dicom_seg import case_segmentation, check_exportable, is_dicom_case

    if not is_dicom_case(source):
        return
    try:
        check_exportable(source)
    except ChestReviewError as error:
        st.caption(str(error))
        return
    regions = _my_regions(source.case_hash, task)
    st.download_button("Download DICOM SEG", lambda: case_segmentation(source, result, _region_masks(source, regions)),
                       file_name=f"case-{source.case_hash[:12]}-seg.dcm",
                       mime="application/dicom", key=f"seg_{task}", on_click="ignore",
                       help="The masks (and your regions) as a DICOM Segmentation that a PACS viewer shows on the "
                            "uploaded images; research use only, no patient identifiers inside")


def _my_regions(case_hash: str, task: str) -> list:
    """The signed-in reviewer's saved regions of this case and page (a quick query, on every run)."""
    from core.reviews import ReviewFilters

    try:
        mine = review_store().current_reviews(ReviewFilters(task=task, reviewer=current_reviewer(),
                                                            case_hash_prefix=case_hash))
    except ChestReviewError as error:
        show_error(error)
        return []
    return [region for review in mine for region in review.regions]


def _region_masks(source, regions: list) -> dict:
    """One boolean mask per tag: the image's shape, or a CT volume's canonical one (regions on slices of its views).
    Built only when the SEG is (a volume's masks are the volume's size)."""
    from core.reviews.regions import regions_by_tag, regions_in_volume

    if hasattr(source, "volume"):
        return regions_in_volume(regions, source.volume.hu.shape)
    return regions_by_tag(regions, source.pixels.shape)


def _slice_choice(slices: dict[str, int]) -> str | None:
    """The view whose shown slice the reviewer records (None: no slice). Keyed, so moving a slider keeps the choice."""
    return st.selectbox(
        "Slice where the model went wrong (optional): the one shown now in",
        [None, *slices],
        format_func=lambda view: "no slice recorded" if view is None else f"{view} view, slice {slices[view]}",
        key="review_slice_view",
    )


REAL_DEMO = "Real demo case"
SYNTHETIC_DEMO = "Synthetic demo case"


def case_sources(task: str) -> list[str]:
    """The page's case choices: upload, the bundled real demo cases of ``task`` (when bundled), the synthetic fallback,
    and the case the worklist opened (``WORKLIST_SOURCE``, while one is open for ``task``)."""
    from core.demo_cases import demo_cases

    return ["Upload a file", *([REAL_DEMO] if demo_cases(task) else []), SYNTHETIC_DEMO, *worklist_sources(task)]


def choose_real_demo_case(task: str, key: str):
    """A selectbox of the bundled real demo cases of ``task`` (true label and source in each title); the chosen case."""
    from core.demo_cases import demo_cases

    cases = {case.file: case for case in demo_cases(task)}
    chosen = st.selectbox("Real demo case (de-identified, from the data pack's test split; licences allow redistribution)",
                          list(cases), format_func=lambda file: cases[file].title, key=key)
    return cases[chosen]


def show_demo_truth(case, predicted_label: str | None) -> None:
    """Beside the model's answer: the demo case's true label, its source and its credit line."""
    from core.classes import class_title

    answer = f" · model's answer: **{class_title(predicted_label)}**" if predicted_label else ""
    st.markdown(f"**True label: {class_title(case.label)}** (source: {case.source}, file {case.source_file}){answer}")
    st.caption(f"Real demo case, credit: {case.credit}")


# --------------------------------------------------------------------------------------------------
# Case store and worklist (``core.cases``): a saved review keeps its case; the worklist reopens it here.

WORKLIST_SOURCE = "From the worklist"
TASK_PAGES = {"cxr": "pages/chest_xray.py", "ct-slice": "pages/ct_slice.py", "ct-volume": "pages/ct_volume.py"}


def request_open(case_hash: str, task: str) -> None:
    """An "Open" button's callback (the worklist, the agreement page): callbacks run before the script, so a rerun
    of the page cannot lose the click; ``follow_open_request`` then goes to the case's page."""
    st.session_state["open_case"] = {"case_hash": case_hash, "task": task}
    st.session_state["switch_to_task"] = task


def follow_open_request() -> None:
    """Early on a page with "Open" buttons: switch to the page of the case just opened (it reads ``open_case``)."""
    if (task := st.session_state.pop("switch_to_task", None)) is not None:
        st.switch_page(TASK_PAGES[task])


@st.cache_resource(show_spinner=False)
def _case_store(url: str, folder: str, retention_days: int):
    from core.cases import CaseStore

    return CaseStore(_review_store(url), folder, retention_days=retention_days)


def case_store():
    """The case store of ``core.settings`` (folder, retention) on the review log's database."""
    from core.cases import CaseStoreError
    from core.settings import case_retention_days, case_store_dir, review_db_url

    try:
        retention = case_retention_days()
    except ValueError as error:
        raise CaseStoreError(str(error)) from error
    return _case_store(review_db_url(), str(case_store_dir()), retention)


def keep_case(study, card, probabilities: dict, predicted_label: str, task: str) -> None:
    """After a saved review: keep the case, de-identified, so any reviewer can reopen it from the worklist."""
    from core.cases import CasePrediction

    image = getattr(study, "volume", study)  # the CT volume page passes an OpenedVolume
    try:
        case_store().save_case(image, CasePrediction(
            task=task, model_name=card.name, model_version=card.version, weights_sha256=card.weights_sha256,
            predicted_label=predicted_label, predicted_probabilities=probabilities), case_hash=study.case_hash)
    except ChestReviewError as error:
        st.warning(f"The review is saved, but the case was not kept for the worklist: {error}")


def open_case_request(task: str) -> dict | None:
    """The case the worklist opened for ``task`` (``st.session_state["open_case"]``: case_hash, task), if any."""
    request = st.session_state.get("open_case")
    return request if isinstance(request, dict) and request.get("task") == task else None


def worklist_sources(task: str) -> list[str]:
    """``[WORKLIST_SOURCE]`` while the worklist has a case open for ``task``, else nothing."""
    return [WORKLIST_SOURCE] if open_case_request(task) else []


def preselect_worklist_source(task: str, key: str) -> None:
    """Call before the page's case radio (``key``): a case the worklist just sent here is the one shown."""
    request = open_case_request(task)
    if request is not None and not request.get("preselected"):
        st.session_state[key] = WORKLIST_SOURCE
        request["preselected"] = True


def _worklist_record(task: str):
    from core.cases import CaseNotFoundError

    request = open_case_request(task)
    record = case_store().get_case(request["case_hash"], task) if request else None
    if record is None:
        raise CaseNotFoundError("The case the worklist opened is not in the case store any more; open the Worklist again.")
    return record


def worklist_study(task: str):
    """The ``Study`` of the case the worklist opened (read from the case store once per session)."""
    record = _worklist_record(task)
    held = st.session_state.get("worklist_study")
    if held is None or held[0] != (task, record.case_hash):
        held = ((task, record.case_hash), case_store().load_image(record).to_study())
        st.session_state["worklist_study"] = held
    return held[1]


def worklist_volume() -> OpenedVolume:
    """The CT volume the worklist opened, read, guarded and hashed once per session like any other volume."""
    record = _worklist_record("ct-volume")
    return _open_volume_once(("stored", record.case_hash), lambda: case_store().load_image(record).to_volume())


def prefer_stored_model(task: str, names: list[str], key: str) -> None:
    """Call before a model selectbox (``key``): a case from the worklist opens on the model that made its stored result."""
    request = open_case_request(task)
    if request is None or request.get("model_chosen"):
        return
    request["model_chosen"] = True
    try:
        record = case_store().get_case(request["case_hash"], task)
    except ChestReviewError:
        return
    if record is not None and record.model_name in names:
        st.session_state[key] = record.model_name


def show_stored_case(task: str, case_hash: str, card, probabilities: dict) -> bool:
    """For a case the store or the log knows: its stored result beside this analysis, and the earlier reviews.

    The reviewer's own reviews are listed; other readers' stay hidden until asked for (the toggle is off by
    default, so a second read can be blind). Returns whether other readers' reviews are shown.
    """
    import pandas as pd

    from core.classes import class_title
    from core.reviews import ReviewFilters

    try:
        record = case_store().get_case(case_hash, task)
        reviews = review_store().current_reviews(ReviewFilters(task=task, case_hash_prefix=case_hash))
    except ChestReviewError as error:
        show_error(error)
        return False
    if record is None and not reviews:
        return False
    st.subheader("Earlier reads of this case")
    if record is not None:
        st.caption(f"Stored result: {record.model_name} {record.model_version}, saved {record.created_at:%Y-%m-%d %H:%M} UTC "
                   f"(kept until {record.expires_at:%Y-%m-%d}).")
        if (record.model_name, record.model_version, record.weights_sha256) != (card.name, card.version, card.weights_sha256):
            st.warning(f"The stored result came from {record.model_name} {record.model_version}; this analysis used "
                       f"{card.name} {card.version}. Compare the two columns below.", icon="🔁")
        classes = list(dict.fromkeys([*record.predicted_probabilities, *probabilities]))
        stored, now = record.predicted_probabilities, probabilities
        st.dataframe(pd.DataFrame({
            "Class": [class_title(c) for c in classes],
            f"Stored ({record.model_name} {record.model_version})": [f"{stored[c]:.1%}" if c in stored else "—" for c in classes],
            f"Now ({card.name} {card.version})": [f"{now[c]:.1%}" if c in now else "—" for c in classes],
        }), hide_index=True, key=f"{task}_stored_result")
    me = current_reviewer()
    mine = [review for review in reviews if me and review.reviewer == me]
    others = [review for review in reviews if not (me and review.reviewer == me)]
    if mine:
        st.caption("Your earlier reviews of this case")
        _reviews_table(mine, f"{task}_my_reviews")
    show = st.toggle(f"Show other readers' reviews ({len(others)})", value=False, key=f"{task}_show_others",
                     help="Off by default, so that a second read can be blind.")
    if show and others:
        _reviews_table(others, f"{task}_other_reviews")
    return show


def _reviews_table(reviews, key: str) -> None:
    import pandas as pd

    from core.classes import class_title
    from core.reviews.agreement import reader_label

    st.dataframe(pd.DataFrame([{
        "Reader": r.reviewer, "When (UTC)": f"{r.created_at:%Y-%m-%d %H:%M}", "Verdict": r.verdict,
        "Reader's label": class_title(reader_label(r)), "Confidence": r.confidence, "Where wrong": r.where_wrong or "",
        "Slice": f"{r.slice_view} {r.slice_index}" if r.slice_view else "", "Note": r.note,
    } for r in reviews]), hide_index=True, width="stretch", key=key)
