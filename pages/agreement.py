"""Agreement page: readers against the models and against each other. Layout only; statistics in
``core.reviews.agreement``, figures in ``core.viz``."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

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
from pages.common import review_store

require_app_frame()  # first statement of every page: its link works as a server's first request

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
    st.dataframe(pd.DataFrame([{
        "Method": "Cohen's kappa" if r.method == "cohen" else "Fleiss' kappa",
        "Readers": ", ".join(r.readers), "Cases": r.kappa.n, "Kappa (95 % interval)": _interval(r.kappa),
    } for r in readers]), hide_index=True, width="stretch")
else:
    st.info("No case has been read by two readers yet.")

st.subheader("Cases driving disagreement")
cases = disagreement_cases(reviews)
by_case: dict[str, list] = {}
for review in reviews:
    by_case.setdefault(review.case_hash, []).append(review)
rows = [{"Case": case[:12], "Readers disagree": case in cases["readers"], "Reader vs model": case in cases["model"],
         "Model says": ", ".join(sorted({r.predicted_label for r in by_case[case]})),
         "Readers say": "; ".join(f"{r.reviewer}: {reader_label(r)}" for r in by_case[case])}
        for case in sorted(set(cases["readers"]) | set(cases["model"]))]
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Open a case's reviews in the Review log (filter by the case prefix).")
else:
    st.success("Every reader agrees with the model and with each other on this task.")
