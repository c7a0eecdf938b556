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
