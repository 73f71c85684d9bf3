"""Metrics snapshots and maintenance reports.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "metrics_snapshots",
        sa.Column("id", BIG_ID, sa.Identity(), nullable=False),
        sa.Column("taken_at", TIMESTAMP, nullable=False),
        sa.Column("payload", DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metrics_snapshots"),
    )
    op.create_index("ix_metrics_snapshots_taken_at", "metrics_snapshots", ["taken_at"])
    op.create_table(
        "maintenance_reports",
        sa.Column("id", BIG_ID, sa.Identity(), nullable=False),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("alert", sa.Text(), nullable=True),
        sa.Column("payload", DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_reports"),
        sa.CheckConstraint(
            "status IN ('ok', 'alert', 'no_data', 'failed')", name="ck_maintenance_reports_status"
        ),
    )
    op.create_index(
        "ux_maintenance_reports_job_period",
        "maintenance_reports",
        ["job", "period"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("maintenance_reports")
    op.drop_table("metrics_snapshots")
