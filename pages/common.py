"""Resources shared by the pages, created once per server process (``st.cache_resource``)."""

from __future__ import annotations

import streamlit as st

from core.errors import ChestReviewError
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


def analyse_once(state_key: str, case_key, analyse, progress: str):
    """The result for ``case_key``, computed once per session (moving a slider must not rerun the models).

    Only the current case is kept, so a session never holds more than one result of each page.
    """
    results = st.session_state.setdefault(state_key, {})
    if case_key not in results:
        with st.status("Analysing…", expanded=False) as status:
            status.update(label=progress)
            results.clear()
            results[case_key] = analyse()
            status.update(label="Analysis done", state="complete")
    return results[case_key]


def review_form(study, card, probabilities: dict, predicted_label: str, task: str, slices: dict[str, int] | None = None) -> None:
    """The review form every page shares; the review records the page's ``task`` (cxr, ct-slice...).

    ``slices`` (the CT volume page): the slice shown now in each view, e.g. ``{"axial": 57, ...}``;
    the reviewer may then record one of them as the slice where the model went wrong.
    """
    from core.classes import class_title
    from core.reviews import ReviewInput

    st.subheader("Your review")
    with st.form(f"review_{task}", clear_on_submit=False):
        reviewer = st.text_input("Reviewer name", value=st.session_state.get("reviewer", ""))
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
            slice_view=slice_view, slice_index=slices[slice_view] if slice_view else None,
        ))
    except ChestReviewError as error:
        show_error(error)
    else:
        st.session_state["reviewer"] = reviewer
        st.success(f"Review saved (review {saved.review_uid[:8]}, version {saved.version}). See the Review log.")


def _slice_choice(slices: dict[str, int]) -> str | None:
    """The view whose shown slice the reviewer records (None: no slice). Keyed, so moving a slider keeps the choice."""
    return st.selectbox(
        "Slice where the model went wrong (optional): the one shown now in",
        [None, *slices],
        format_func=lambda view: "no slice recorded" if view is None else f"{view} view, slice {slices[view]}",
        key="review_slice_view",
    )
