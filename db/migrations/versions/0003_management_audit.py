"""The audit trail of the cache management API (db/audit.py).

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "management_audit",
        sa.Column("id", BIG_ID, sa.Identity(), nullable=False),
        sa.Column("at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("arguments", DOCUMENT, nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=True),
        sa.Column("result", DOCUMENT, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_management_audit"),
    )
    op.create_index("ix_management_audit_at", "management_audit", ["at"])
    op.create_index("ix_management_audit_who_at", "management_audit", ["who", "at"])


def downgrade() -> None:
    op.drop_table("management_audit")
