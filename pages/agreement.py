"""Agreement page: readers against the models and against each other. Layout only; statistics in
``core.reviews.agreement``, figures in ``core.viz``."""

from __future__ import annotations

import math

import streamlit as st

from core.classes import class_title
from core.errors import ReviewLogError
from core.reviews import TASK_TITLES, TASKS, ReviewFilters
from core.reviews.agreement import (
    agreement_over_time,
    disagreement_cases,
    model_agreement,
    reader_agreement,
    reader_label,
)
from core.viz import agreement_over_time_figure, confusion_figure
from pages.app_frame import require_app_frame
from pages.common import case_store, follow_open_request, request_open, review_store

require_app_frame()  # first statement of every page: its link works as a server's first request
follow_open_request()  # an Open click of the last run: go to the case's page

st.title("Agreement")
st.caption("Current reviews only (an amended review counts once, as amended). A reader's label is the model's "
           "when they agreed, their correction otherwise. Intervals are 95 %: Wilson for rates, bootstrap over "
           "cases (2,000 resamples, seeded) for kappa.")


def _interval(value) -> str:
    if math.isnan(value.estimate):
        return "undefined (one label throughout)"
    if math.isnan(value.low):
        return f"{value.estimate:.2f}"
    return f"{value.estimate:.2f} ({value.low:.2f} to {value.high:.2f})"


try:
    everything = review_store().current_reviews()
except ReviewLogError as error:
    st.error(str(error))
    st.stop()

tasks = [task for task in TASKS if any(r.task == task for r in everything)]
if not tasks:
    st.info("No reviews yet: save one from the Chest X-ray, CT slice or CT volume page.")
    st.stop()
task = st.selectbox("Task", tasks, format_func=lambda t: TASK_TITLES.get(t, t), key="ag_task")
reviews = review_store().current_reviews(ReviewFilters(task=task))

st.subheader("Readers against the model")
for result in model_agreement(reviews):
    left, right = st.columns([2, 3])
    left.metric(f"{result.model_name} {result.model_version}", f"{result.agreement.estimate:.0%} agreement",
                help=f"{result.agreement.n} reviews; 95 % interval {result.agreement.low:.0%} to {result.agreement.high:.0%}")
    left.caption(f"{result.agreement.n} reviews · 95 % interval {result.agreement.low:.0%} to {result.agreement.high:.0%}")
    right.plotly_chart(confusion_figure(result.labels, result.confusion, "reader (rows) vs model (columns)"),
                       width="stretch", key=f"confusion-{result.model_name}-{result.model_version}")
st.plotly_chart(agreement_over_time_figure(agreement_over_time(reviews)), width="stretch", key="over-time")

st.subheader("Readers against each other")
readers = reader_agreement(reviews)
if readers:
    for row_start in range(0, len(readers), 3):
        for column, r in zip(st.columns(3), readers[row_start:row_start + 3]):
            method = "Cohen's kappa" if r.method == "cohen" else "Fleiss' kappa"
            column.metric(f"{method}: {', '.join(r.readers)}", _interval(r.kappa).split(" (")[0],
                          help=f"{r.kappa.n} cases read by all of them")
            column.caption(f"{r.kappa.n} cases · 95 % interval: {_interval(r.kappa)}")
else:
    st.info("No case has been read by two readers yet.")

st.subheader("Cases driving disagreement")
cases = disagreement_cases(reviews)
by_case: dict[str, list] = {}
for review in reviews:
    by_case.setdefault(review.case_hash, []).append(review)
driving = sorted(set(cases["readers"]) | set(cases["model"]))
if not driving:
    st.success("Every reader agrees with the model and with each other on this task.")
    st.stop()
try:
    stored = {case.case_hash for case in case_store().list_cases(task) if case.available}
except ReviewLogError as error:
    st.error(str(error))
    stored = set()
WIDTHS = [2, 2, 2, 5, 1]
for column, title in zip(st.columns(WIDTHS), ["Case", "Disagreement", "Model says", "Readers say", ""]):
    column.caption(title)
for case in driving:
    cells = st.columns(WIDTHS, vertical_alignment="center")
    cells[0].write(f"`{case[:12]}`")
    cells[1].write(" · ".join(kind for kind, on in (("readers", case in cases["readers"]), ("vs model", case in cases["model"])) if on))
    cells[2].write(", ".join(sorted({class_title(r.predicted_label) for r in by_case[case]})))
    cells[3].write("; ".join(f"{r.reviewer}: {class_title(reader_label(r))}" for r in by_case[case]))
    if case in stored:
        cells[4].button("Open", key=f"ag_open_{case}", on_click=request_open, args=(case, task))
    else:
        cells[4].caption("not stored")
