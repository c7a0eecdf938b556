"""Three reviewers upload at once to a server with one analysis slot: each gets the result a lone session gets,
nobody sees an error, and the ones queued are told they wait for a free slot (``tests/browser/load.py``)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.browser.conftest import app_process
from tests.browser.load import run_load, write_uploads

pytestmark = pytest.mark.browser


def test_concurrent_sessions_get_a_lone_sessions_results(tmp_path, bundled_weights_dir):
    images = write_uploads(tmp_path, 3, size=512)
    with app_process(tmp_path, bundled_weights_dir, env={"CHEST_INFERENCE_SLOTS": "1"}) as (url, process):
        # a thread of its own: the session's sync Playwright (other browser tests) keeps an event loop on this one
        with ThreadPoolExecutor(1) as pool:
            report = pool.submit(asyncio.run, run_load(url, images, process.pid)).result()
    assert not report.errors, report.errors
    assert not report.mismatches, report.mismatches
    assert len(report.seconds) == 3
    assert report.waited >= 1, report.summary()  # three uploads, one slot: someone queued and was told
