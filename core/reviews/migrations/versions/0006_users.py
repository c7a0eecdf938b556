"""Logins and roles: the ``users`` and ``login_attempts`` tables (issue 11 item 5).

Revision ID: 0006
Revises: 0005
Create Date: hand-written

Mirrors ``core.reviews.schema.UserRow`` and ``LoginAttemptRow``; ``core.auth`` reads and writes them.
Plain ``op.create_table`` with generic types, so the same revision runs on SQLite and PostgreSQL.
``users.password_hash`` holds an argon2id hash, never a password. ``login_attempts`` records each
sign-in attempt by a digest of the typed username so the lockout holds across server processes.

Downgrade drops both tables: every login is lost (the reviews keep their reviewers' names). It
refuses while users exist unless ``-x drop_users=yes`` is passed
(``python -m core.reviews -x drop_users=yes downgrade 0005``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of core.reviews.schema.ROLES / LOGIN_OUTCOMES as of this revision.
ROLES = ("reviewer", "admin")
LOGIN_OUTCOMES = ("success", "failure", "reset")


def _in_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.CheckConstraint(f"role IN ({_in_list(ROLES)})", name="ck_users_role"),
        sa.CheckConstraint("length(username) BETWEEN 1 AND 100", name="ck_users_username_length"),
    )
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username_key", sa.String(64), nullable=False),
        sa.Column("attempted_at", sa.DateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.CheckConstraint(f"outcome IN ({_in_list(LOGIN_OUTCOMES)})", name="ck_login_attempts_outcome"),
    )
    op.create_index("ix_login_attempts_key_time", "login_attempts", ["username_key", "attempted_at"])


def downgrade() -> None:
    _refuse_to_lose_users()
    op.drop_index("ix_login_attempts_key_time", table_name="login_attempts")
    op.drop_table("login_attempts")
    op.drop_table("users")


def _refuse_to_lose_users() -> None:
    if context.is_offline_mode():  # --sql: no rows to look at
        return
    if context.get_x_argument(as_dictionary=True).get("drop_users", "").lower() in ("yes", "true", "1"):
        return
    count = op.get_bind().execute(sa.text("SELECT count(*) FROM users")).scalar_one()
    if count:
        raise RuntimeError(
            f"The review database holds {count} user account(s); downgrading below 0006 would delete every "
            "login. Run 'python -m core.reviews -x drop_users=yes downgrade 0005' to downgrade anyway."
        )
