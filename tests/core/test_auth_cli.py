"""``python -m core.auth``: the first admin and the other account commands, in-process and as a real process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.auth import UserStore
from core.auth.__main__ import main

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "a fine long password"


def cli(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_admin_from_a_prompt_then_manage_accounts(url, monkeypatch, capsys) -> None:
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, out, err = cli(monkeypatch, capsys, "--url", url, "create-admin", "--username", "Boss")
    assert (code, err) == (0, "") and "Created administrator 'boss'" in out and PASSWORD not in out
    user = UserStore(url).authenticate("boss", PASSWORD)
    assert (user.role, user.must_change_password) == ("admin", False)

    code, out, _ = cli(monkeypatch, capsys, "--url", url, "add-user", "--username", "ann", "--password-stdin",
                       stdin="temporary pass 1\n")
    assert code == 0 and "Created reviewer 'ann'" in out
    assert UserStore(url).authenticate("ann", "temporary pass 1").must_change_password

    assert cli(monkeypatch, capsys, "--url", url, "disable-user", "--username", "ann")[0] == 0
    code, out, _ = cli(monkeypatch, capsys, "--url", url, "list-users")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].split()[:3] == ["ann", "reviewer", "disabled"] and lines[1].split()[:3] == ["boss", "admin", "active"]
    assert cli(monkeypatch, capsys, "--url", url, "enable-user", "--username", "ann")[0] == 0
    assert cli(monkeypatch, capsys, "--url", url, "set-role", "--username", "ann", "--role", "admin")[0] == 0
    code, out, _ = cli(monkeypatch, capsys, "--url", url, "reset-password", "--username", "ann", "--password-stdin",
                       stdin="another temp pass\n")
    assert code == 0 and UserStore(url).authenticate("ann", "another temp pass").role == "admin"


@pytest.mark.parametrize("args, stdin, message", [
    (["create-admin", "--username", "boss", "--password-stdin"], "short\n", "at least 10 characters"),
    (["create-admin", "--username", "bad name", "--password-stdin"], PASSWORD + "\n", "letters, digits"),
    (["disable-user", "--username", "nobody"], "", "no account named 'nobody'"),
])
def test_errors_are_one_line_on_stderr(url, monkeypatch, capsys, args, stdin, message) -> None:
    code, out, err = cli(monkeypatch, capsys, "--url", url, *args, stdin=stdin)
    assert code == 1 and out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_mismatched_prompts_change_nothing(url, monkeypatch, capsys) -> None:
    answers = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = cli(monkeypatch, capsys, "--url", url, "create-admin", "--username", "boss")
    assert code == 1 and "differ" in err and UserStore(url).users() == []


def test_the_command_runs_as_documented(tmp_path: Path) -> None:
    """``python -m core.auth`` as a process, on the app's database from CHEST_REVIEW_DB."""
    env = {**os.environ, "CHEST_REVIEW_DB": str(tmp_path / "reviews.sqlite"), "PYTHONPATH": str(REPO)}
    env.pop("CHEST_REVIEW_DB_URL", None)
    done = subprocess.run([sys.executable, "-m", "core.auth", "create-admin", "--username", "boss", "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([sys.executable, "-m", "core.auth", "list-users"], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120)
    assert listed.stdout.split()[:3] == ["boss", "admin", "active"]
    assert PASSWORD not in done.stdout + done.stderr + listed.stdout + listed.stderr
