"""Placeholder for the de-identified case store behind the worklist (issue 11 item 2); filled in by that work.

Revision ID: 0005
Revises: 0004
Create Date: hand-written
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
