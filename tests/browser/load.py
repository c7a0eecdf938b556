"""Many reviewers at once: N browser sessions (Playwright contexts) analysing different uploads on one server.

``python -m tests.browser.load --sessions 8`` starts the app (bundled models, a throw-away review log), writes
N different synthetic X-rays, signs every session in as a reviewer, has one session analyse each of them in turn (the reference), then N sessions
upload one each at the same moment, and prints: time to result per session (p50, p95), errors, whether every
session saw the reference's result, how many waited for a free analysis slot, and the server's memory before and
after. ``tests/browser/test_load.py`` runs it small. Figures in the README come from this command.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.classes import MANET_CLASSES
from core.phantoms import make_phantom
from tests.browser.conftest import BROWSER_REVIEWER, CHROMIUM, LAUNCH_ARGS
from tests.sign_in import TEST_PASSWORD

RESULT_TIMEOUT_MS = 600_000


@dataclass
class LoadReport:
    sessions: int
    seconds: list[float] = field(default_factory=list)  # time to result, per session that got one
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)  # sessions whose result differs from the reference
    waited: int = 0  # sessions that were shown "Waiting for a free analysis slot"
    server_rss_mb: tuple[float, float] = (0.0, 0.0)  # before, after

    def summary(self) -> str:
        p50, p95 = np.percentile(self.seconds, [50, 95]) if self.seconds else (float("nan"),) * 2
        return (f"{self.sessions} sessions: time to result p50 {p50:.1f} s, p95 {p95:.1f} s (max {max(self.seconds, default=0):.1f} s); "
                f"errors {len(self.errors)}; results identical to a single session's: "
                f"{self.sessions - len(self.mismatches) - len(self.errors)}/{self.sessions}; "
                f"waited for a slot: {self.waited}; server memory {self.server_rss_mb[0]:.0f} MB before, "
                f"{self.server_rss_mb[1]:.0f} MB after")


def write_uploads(folder: Path, count: int, size: int = 1024) -> list[Path]:
    """``count`` different synthetic radiographs (class and seed vary) as PNG files."""
    paths = []
    for index in range(count):
        path = folder / f"upload_{index}.png"
        phantom = make_phantom(MANET_CLASSES[index % len(MANET_CLASSES)], seed=100 + index, size=size)
        Image.fromarray((phantom.pixels * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def server_rss_mb(pid: int) -> float:
    """Resident memory of the server process and its children (Streamlit runs in one process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sign_in(page, username: str) -> None:
    """The sign-in form, as ``tests.sign_in.sign_in_browser`` fills it, with Playwright's async API."""
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password", exact=True).fill(TEST_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text(f"Signed in as {username}").first.wait_for()


async def analyse_upload(context, url: str, image: Path, start: asyncio.Barrier | None = None) -> tuple[float, str, bool]:
    """One session: open the X-ray page, upload, wait for the result; (seconds to result, result text, waited).
    ``start``: upload only when every session has reached it (signed in and on the page), so that the uploads
    arrive together, however long each sign-in took."""
    page = await context.new_page()
    page.set_default_timeout(RESULT_TIMEOUT_MS)
    await page.goto(f"{url}/chest_xray")
    await sign_in(page, BROWSER_REVIEWER)  # every new session signs in (not timed)
    await page.get_by_text("Research use only").first.wait_for()
    if start is not None:  # bounded: a session that failed before it never arrives
        await asyncio.wait_for(start.wait(), RESULT_TIMEOUT_MS / 1000)
    waited = False
    started = time.perf_counter()
    await page.locator("input[type=file]").set_input_files(str(image))
    waiting = page.get_by_text("Waiting for a free analysis slot")
    prediction = page.get_by_text("Prediction:")
    while not await prediction.count():
        waited = waited or bool(await waiting.count())
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - started
    await page.locator("[data-testid=stMetricValue]").first.wait_for()
    await page.locator("[data-testid=stPlotlyChart] text").first.wait_for()
    content = await page.content()
    if "Traceback" in content:
        raise RuntimeError("a stack trace on the page")
    texts = [await prediction.first.inner_text(), await page.locator("[data-testid=stMetricValue]").first.inner_text(),
             *sorted(await page.locator("[data-testid=stPlotlyChart] text").all_text_contents())]
    await page.close()
    return seconds, " | ".join(t.strip() for t in texts if t.strip()), waited


async def run_load(url: str, images: list[Path], server_pid: int) -> LoadReport:
    from playwright.async_api import async_playwright

    report = LoadReport(sessions=len(images))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        reference = {}
        context = await browser.new_context()
        for image in images:  # one session, one case after the other: the results to expect
            reference[image] = (await analyse_upload(context, url, image))[1]
        await context.close()
        report.server_rss_mb = (server_rss_mb(server_pid), 0.0)
        contexts = [await browser.new_context() for _ in images]
        start = asyncio.Barrier(len(images))
        outcomes = await asyncio.gather(*(analyse_upload(c, url, image, start) for c, image in zip(contexts, images)),
                                        return_exceptions=True)
        report.server_rss_mb = (report.server_rss_mb[0], server_rss_mb(server_pid))
        for image, outcome in zip(images, outcomes):
            if isinstance(outcome, BaseException):
                report.errors.append(f"{image.name}: {type(outcome).__name__}: {outcome}"[:300])
                continue
            seconds, text, waited = outcome
            report.seconds.append(seconds)
            report.waited += waited
            if text != reference[image]:
                report.mismatches.append(f"{image.name}: {text!r} != {reference[image]!r}")
        for context in contexts:
            await context.close()
        await browser.close()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024, help="side of the synthetic uploads (px)")
    parser.add_argument("--weights", help="registry folder (default: the bundled weights)")
    args = parser.parse_args(argv)
    from core.settings import weights_dir
    from tests.browser.conftest import app_process

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        images = write_uploads(folder, args.sessions, args.size)
        with app_process(folder, Path(args.weights) if args.weights else weights_dir()) as (url, process):
            report = asyncio.run(run_load(url, images, process.pid))
    print(report.summary())
    for line in report.errors + report.mismatches:
        print(" ", line)
    return 0 if not report.errors and not report.mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
