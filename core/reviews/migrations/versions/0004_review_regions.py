"""Placeholder for regions drawn by reviewers (issue 11 item 1); filled in by that work.

Revision ID: 0004
Revises: 0003
Create Date: hand-written
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
