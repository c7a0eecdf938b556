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


@pytest.fixture
def signed_out():
    """Ask for this fixture to get AppTests that nobody signed in (see ``signed_in_by_default``)."""


@pytest.fixture(autouse=True)
def signed_in_by_default(request, monkeypatch, tmp_path):
    """Every page requires a signed-in user: each AppTest (``from_file``, ``from_function``, ``from_string``) comes signed in as
    ``tests.sign_in.DEFAULT_USER`` (an admin, created in the test's review database), unless the test
    uses the ``signed_out`` fixture. The review database defaults to one in ``tmp_path`` (the same file
    the ``env`` / ``registry_env`` / ``db_path`` fixtures name), never the repository's ``var/``.
    """
    import os

    from streamlit.testing.v1 import AppTest

    from tests.sign_in import sign_in

    if "CHEST_REVIEW_DB_URL" not in os.environ:
        monkeypatch.setenv("CHEST_REVIEW_DB", str(tmp_path / "reviews.sqlite"))
    if "signed_out" in request.fixturenames:
        return
    for constructor in ("from_file", "from_function", "from_string"):
        monkeypatch.setattr(AppTest, constructor, classmethod(_signing_in(getattr(AppTest, constructor).__func__, sign_in)))


def _signing_in(construct, sign_in):
    def signed_in(cls, *args, **kwargs):
        app = construct(cls, *args, **kwargs)
        sign_in(app)
        return app

    return signed_in
