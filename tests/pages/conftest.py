"""Fixtures shared by the page tests (Streamlit's AppTest)."""

import pytest


@pytest.fixture
def registry_env(monkeypatch, tmp_path):
    """Point the pages at a registry folder (``registry_env(folder)``) and a fresh review log."""
    import streamlit as st

    monkeypatch.setenv("CHEST_REVIEW_DB", str(tmp_path / "reviews.sqlite"))

    def use(folder):
        monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(folder))
        st.cache_resource.clear()

    yield use
    st.cache_resource.clear()
