"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Review-log migrations are hand-written: give each a short, deterministic revision id
(``0002``, ``0003``...) with ``python -m core.reviews revision --rev-id 0002 -m "..."``.
The ``reviews`` table is append-only: never UPDATE or DELETE its rows in a migration. On SQLite a
table rebuild (batch mode) must drop the ``reviews_no_update`` / ``reviews_no_delete`` triggers
first and re-create them afterwards.
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: Union[str, Sequence[str], None] = ${repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
