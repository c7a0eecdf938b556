"""Review log page: filter, read and export the radiologists' reviews. Layout only; logic is in core.reviews.

Every signed-in user reads every review here (a team compares its reads); the CSV export holds
everything for an admin and only the signed-in reviewer's own reviews otherwise (``core.auth.roles``).

Registered by app.py through ``st.navigation`` (so no ``st.set_page_config`` here).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pandas as pd
import streamlit as st

from core.auth import allowed
from core.errors import ReviewLogError
from core.reviews import TASK_TITLES, TASKS, Review, ReviewFilters, ReviewStore
from pages.app_frame import require_app_frame
from pages.common import current_user, review_store

require_app_frame()  # first statement of every page: its link works as a server's first request

ALL = "All"


def _choice(value: str) -> str | None:
    return None if value == ALL else value


def _task_title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def _rows(reviews: list[Review]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Saved (UTC)": r.created_at.strftime("%Y-%m-%d %H:%M"),
                "Task": _task_title(r.task),
                "Reviewer": r.reviewer,
                "Case": r.case_hash[:12],
                "Model": f"{r.model_name} {r.model_version}",
                "Predicted": r.predicted_label,
                "Verdict": r.verdict,
                "Corrected": r.corrected_label,
                "Confidence": r.confidence,
                "Where wrong": r.where_wrong or "",
                "Slice": f"{r.slice_view} {r.slice_index}" if r.slice_view else "",
                "Regions": ", ".join(region.tag for region in r.regions),
                "Note": r.note,
                "Version": r.version,
                "Review id": r.review_uid,
            }
            for r in reviews
        ]
    )


def _filters(everything: list[Review]) -> ReviewFilters:
    reviewers = sorted({r.reviewer for r in everything})
    labels = sorted({r.predicted_label for r in everything} | {r.corrected_label for r in everything})
    models = sorted({r.model_name for r in everything})
    tasks = [task for task in TASKS if any(r.task == task for r in everything)]  # the pages' order
    with st.expander("Filters", expanded=True):
        c0, c1, c2, c3 = st.columns(4)
        task = c0.selectbox(
            "Task", [ALL, *tasks], format_func=lambda t: t if t == ALL else _task_title(t), key="rl_task"
        )
        reviewer = c1.selectbox("Reviewer", [ALL, *reviewers], key="rl_reviewer")
        verdict = c2.selectbox("Verdict", [ALL, "agree", "disagree"], key="rl_verdict")
        model = c3.selectbox("Model", [ALL, *models], key="rl_model")
        c4, c5, c6 = st.columns(3)
        predicted = c4.selectbox("Predicted label", [ALL, *labels], key="rl_predicted")
        corrected = c5.selectbox("Corrected label", [ALL, *labels], key="rl_corrected")
        prefix = c6.text_input("Case hash starts with", key="rl_case_prefix").strip()
        c7, c8 = st.columns(2)
        date_from: date | None = c7.date_input("From (UTC)", value=None, key="rl_from")
        date_to: date | None = c8.date_input("To (UTC)", value=None, key="rl_to")
    return ReviewFilters(
        task=_choice(task),
        reviewer=_choice(reviewer),
        verdict=_choice(verdict),
        model_name=_choice(model),
        predicted_label=_choice(predicted),
        corrected_label=_choice(corrected),
        case_hash_prefix=prefix or None,
        date_from=date_from,
        date_to=date_to,
    )


def _history(store: ReviewStore, reviews: list[Review]) -> None:
    by_uid = {r.review_uid: r for r in reviews}
    uid = st.selectbox(
        "Show the history of a review",
        list(by_uid),
        index=None,
        placeholder="Choose a review",
        format_func=lambda u: (
            f"{by_uid[u].created_at:%Y-%m-%d %H:%M} · {_task_title(by_uid[u].task)} · {by_uid[u].reviewer}"
            f" · case {by_uid[u].case_hash[:12]}"
            f" · v{by_uid[u].version}"
        ),
        key="rl_history_uid",
    )
    if uid is not None:
        st.dataframe(_rows(store.history(uid)), hide_index=True, width="stretch")


def _download(store: ReviewStore, filters: ReviewFilters) -> None:
    user = current_user()
    if user is None:
        return
    if not allowed(user, "export_all"):  # a reviewer exports their own reviews; an admin, everyone's
        if filters.reviewer not in (None, user.username):
            st.caption("You can export your own reviews only: choose yourself (or All) as the reviewer.")
            return
        filters = replace(filters, reviewer=user.username)
        st.caption("The CSV holds your own reviews among those shown; an administrator exports everyone's.")
    include_history = st.checkbox("Include superseded versions", key="rl_include_history")
    st.download_button(
        "Download CSV",
        data=store.export_csv(filters, include_history=include_history),
        file_name=f"review_log_{datetime.now(timezone.utc):%Y%m%d_%H%M}.csv",
        mime="text/csv",
        key="rl_download",
    )


def render() -> None:
    st.title("Review log")
    try:
        store = review_store()
        everything = store.current_reviews()
        if not everything:
            st.info("No reviews have been saved yet. Reviews appear here once a case has been reviewed.")
            return
        filters = _filters(everything)
        reviews = store.current_reviews(filters)
        if not reviews:
            st.info("No reviews match these filters.")
            return
        st.caption(f"{len(reviews)} of {len(everything)} reviews (latest version of each).")
        st.dataframe(_rows(reviews), hide_index=True, width="stretch")
        _history(store, reviews)
        _download(store, filters)
    except ReviewLogError as error:
        st.error(str(error))
    except OSError as error:  # e.g. the folder of the database cannot be created
        st.error(f"The review log cannot be reached: {error.strerror or error}.")


render()
