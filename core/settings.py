"""Paths and limits, overridable through environment variables (the app, CLI and tests all read these)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAX_UPLOAD_MB = 50


def weights_dir() -> Path:
    """Registry folder holding ``manifest.json`` and the weight files it lists."""
    return Path(os.environ.get("CHEST_WEIGHTS_DIR", REPO_ROOT / "weights"))


def review_db_url() -> str:
    """SQLAlchemy URL of the review log; a SQLite file under ``var/`` by default."""
    url = os.environ.get("CHEST_REVIEW_DB_URL")
    if url:
        return url
    path = Path(os.environ.get("CHEST_REVIEW_DB", REPO_ROOT / "var" / "reviews.sqlite"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def max_upload_mb() -> int:
    """Upload cap in MB: ``$CHEST_MAX_UPLOAD_MB``, else ``server.maxUploadSize`` of ``.streamlit/config.toml``.

    Streamlit enforces the same number on uploads; core enforces it on every other path (CLI, tests).
    """
    if "CHEST_MAX_UPLOAD_MB" in os.environ:
        return int(os.environ["CHEST_MAX_UPLOAD_MB"])
    config = REPO_ROOT / ".streamlit" / "config.toml"
    if config.is_file():
        with open(config, "rb") as handle:
            return int(tomllib.load(handle).get("server", {}).get("maxUploadSize", DEFAULT_MAX_UPLOAD_MB))
    return DEFAULT_MAX_UPLOAD_MB


def inference_slots() -> int:
    """How many analyses the app runs at once (``$CHEST_INFERENCE_SLOTS``): by default one per two CPU cores (each
    model already uses two threads), at least one; a GPU machine may set more."""
    if "CHEST_INFERENCE_SLOTS" in os.environ:
        return max(1, int(os.environ["CHEST_INFERENCE_SLOTS"]))
    return max(1, (os.cpu_count() or 2) // 2)


def _positive_number(name: str, default: float) -> float:
    """``$name`` as a positive number, else ``default`` (a typo must not switch a safety limit off)."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def session_idle_minutes() -> float:
    """Sign out after this many minutes without any action (``$CHEST_SESSION_IDLE_MINUTES``, default 60)."""
    return _positive_number("CHEST_SESSION_IDLE_MINUTES", 60)


def session_max_hours() -> float:
    """Sign out this many hours after signing in, active or not (``$CHEST_SESSION_MAX_HOURS``, default 12)."""
    return _positive_number("CHEST_SESSION_MAX_HOURS", 12)


def login_lockout() -> tuple[int, float, float]:
    """(failures, within minutes, lock minutes): ``$CHEST_LOGIN_MAX_FAILURES`` (5) failed sign-ins within
    ``$CHEST_LOGIN_WINDOW_MINUTES`` (15) lock the name for ``$CHEST_LOGIN_LOCK_MINUTES`` (15)."""
    return (int(_positive_number("CHEST_LOGIN_MAX_FAILURES", 5)), _positive_number("CHEST_LOGIN_WINDOW_MINUTES", 15),
            _positive_number("CHEST_LOGIN_LOCK_MINUTES", 15))


DEFAULT_CASE_RETENTION_DAYS = 365


def case_store_dir() -> Path:
    """Folder of the de-identified case store's pixel files (``core.cases``): ``$CHEST_CASE_STORE``, else
    ``cases/`` beside the review log's SQLite file (``var/cases`` when the review log is not a local file)."""
    if os.environ.get("CHEST_CASE_STORE"):
        return Path(os.environ["CHEST_CASE_STORE"])
    url = os.environ.get("CHEST_REVIEW_DB_URL")
    if url:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            return Path(parsed.database).parent / "cases"
        return REPO_ROOT / "var" / "cases"
    return Path(os.environ.get("CHEST_REVIEW_DB", REPO_ROOT / "var" / "reviews.sqlite")).parent / "cases"


def case_retention_days() -> int:
    """Days a saved case's pixels are kept (``$CHEST_CASE_RETENTION_DAYS``, default 365); then ``purge`` removes them."""
    text = os.environ.get("CHEST_CASE_RETENTION_DAYS", "").strip()
    if not text:
        return DEFAULT_CASE_RETENTION_DAYS
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise ValueError(f"CHEST_CASE_RETENTION_DAYS must be a whole number of days, at least 1; got {text!r}.")
    return days
