"""Progress bars stay sparse when stderr is not a terminal (a nohup or CI log)."""

import io
import sys

from core.progress import LOG_INTERVAL_S, progress_bar


def test_off_a_terminal_a_bar_is_redrawn_at_most_once_a_minute(monkeypatch):
    log = io.StringIO()  # not a TTY
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(20000), desc="decoding", file=log):
        pass
    redraws = log.getvalue().count("\r")
    assert redraws <= 3, redraws  # start and end, not thousands of lines
    assert progress_bar(range(1), file=log).mininterval == LOG_INTERVAL_S


def test_on_a_terminal_the_bar_is_tqdm_as_usual(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_bar(range(1)).mininterval == 0.1  # tqdm's default
