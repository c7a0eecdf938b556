"""Every page runs inside ``app.py``, even when its link is the first request the server gets.

``app.py`` declares the pages with ``st.navigation``. Streamlit also keeps its older multipage mode,
the automatic listing of a ``pages/`` folder beside the main script, and uses it for every script run
of the process until some run has called ``st.navigation`` (Streamlit 1.67: the process-wide flag
``PagesManager.uses_pages_directory`` is set when the first session starts, because ``pages/``
exists, and only ``st.navigation`` clears it). In that mode Streamlit never runs ``app.py`` for a
page link: when the first request after the server starts is ``/chest_xray`` (a bookmark, a link from
a colleague), the page file runs alone — no research-use banner, a sidebar listing every file of
``pages/`` ("app", "common", ...) — and every later page link does the same until someone opens the
home page, whose run goes through ``app.py``.

``require_app_frame()``, the first statement of every page, ends that mode for the process and reruns
at once: the rerun goes through ``app.py`` and opens the same page, because a page's URL path (and so
its page hash) is its file name in both modes (``app.py`` keeps Streamlit's default URL paths).
``tests/browser/test_page_links.py`` opens each page's link as a fresh server's first request.

It then admits only a signed-in user (``pages.sign_in.gate``): ``app.py`` already shows the sign-in
form instead of any page, and this second check keeps every page closed by whatever route it runs.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def require_app_frame() -> None:
    """Call first in every page: outside ``app.py`` (Streamlit's ``pages/`` mode), rerun through it;
    then stop unless someone is signed in (the sign-in form is all a visitor sees)."""
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False  # what st.navigation does, for the whole process
        st.rerun()  # same page (same URL path), now run by app.py
    from pages.sign_in import gate

    if gate(sidebar=False) is None:
        st.stop()
