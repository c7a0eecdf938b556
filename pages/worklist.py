"""Worklist page: the stored cases, filtered; "Open" shows a case on its task's page. Layout only; the list
is ``core.cases.worklist``, the cases ``core.cases.CaseStore``."""

from __future__ import annotations

import streamlit as st

from core.cases import WorklistFilters, model_versions, worklist
from core.classes import class_title
from core.errors import ChestReviewError
from core.reviews import TASK_TITLES, TASKS
from pages.app_frame import require_app_frame
from pages.common import case_store, current_reviewer, follow_open_request, request_open, review_store, show_error

require_app_frame()  # first statement of every page: its link works as a server's first request

ANY = "any"
MAX_ROWS = 100  # more than anyone reads in one sitting; the filters narrow it


follow_open_request()  # an Open click of the last run: go to the case's page

st.title("Worklist")
st.caption("Cases reviewers saved, kept de-identified (the pixels shown and their spacing, no file names or "
           "identifiers) until their retention ends. Open one to read it again on its page.")

try:
    cases = case_store().list_cases()
    reviews = review_store().current_reviews()
except ChestReviewError as error:
    show_error(error)
    st.stop()

if not cases:
    st.info("No stored cases yet: a case is kept when a review is saved on the Chest X-ray, CT slice or CT volume page.")
    st.stop()

me = current_reviewer()  # the signed-in user (every page requires one)

first, second, third = st.columns(3)
tasks = [task for task in TASKS if any(case.task == task for case in cases)]
task = first.selectbox("Task", [ANY, *tasks], format_func=lambda t: "All tasks" if t == ANY else TASK_TITLES[t],
                       key="wl_task")
versions = model_versions([case for case in cases if task == ANY or case.task == task])
model = second.selectbox("Model", [ANY, *versions], format_func=lambda m: "All models" if m == ANY else m, key="wl_model")
version = third.selectbox("Version", [ANY, *versions.get(model, [])],
                          format_func=lambda v: "All versions" if v == ANY else v, key="wl_version",
                          disabled=model == ANY)
toggles = st.columns(4)
not_mine = toggles[0].toggle("Not yet reviewed by me", key="wl_not_mine")
versus_model = toggles[1].toggle("Reviewer disagrees with the model", key="wl_vs_model")
between = toggles[2].toggle("Readers disagree with each other", key="wl_readers")
low = toggles[3].toggle("Low model confidence", key="wl_low")
threshold = st.slider("Low confidence: top probability below", 0.5, 1.0, 0.7, 0.05, key="wl_threshold",
                      disabled=not low)

rows = worklist(cases, reviews, WorklistFilters(
    reviewer=me, not_reviewed_by_me=not_mine, model_disagreement=versus_model, reader_disagreement=between,
    max_confidence=threshold if low else None, model_name=None if model == ANY else model,
    model_version=None if model == ANY or version == ANY else version, task=None if task == ANY else task))

st.write(f"**{len(rows)}** of {sum(case.available for case in cases)} stored cases" +
         (f" (the newest {MAX_ROWS} shown)" if len(rows) > MAX_ROWS else ""))
if not rows:
    st.info("No case matches these filters.")
    st.stop()

WIDTHS = [2.2, 1.5, 2.5, 2.5, 2.3, 2, 1.5]
for column, title in zip(st.columns(WIDTHS), ["Case", "Task", "Model", "Model says", "Readers", "Flags", ""]):
    column.caption(title)
for row in rows[:MAX_ROWS]:
    case = row.case
    cells = st.columns(WIDTHS, vertical_alignment="center")
    cells[0].write(f"`{case.case_hash[:12]}`  \n{case.created_at:%Y-%m-%d}")
    cells[1].write(TASK_TITLES[case.task])
    cells[2].write(f"{case.model_name} {case.model_version}")
    cells[3].write(f"{class_title(case.predicted_label)} ({case.confidence:.0%})")
    cells[4].write(", ".join(row.readers) if row.readers else "nobody yet")
    flags = [flag for flag, on in (("vs model", row.model_disagreement), ("readers differ", row.reader_disagreement),
                                   ("read by me", row.reviewed_by_me)) if on]
    cells[5].write(" · ".join(flags) or "—")
    cells[6].button("Open", key=f"open_{case.task}_{case.case_hash}", on_click=request_open, args=(case.case_hash, case.task))
