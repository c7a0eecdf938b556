"""Paths and limits, overridable through environment variables (the app, CLI and tests all read these)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    """Upload cap in MB; the same number as ``server.maxUploadSize`` in ``.streamlit/config.toml``."""
    return int(os.environ.get("CHEST_MAX_UPLOAD_MB", "50"))
