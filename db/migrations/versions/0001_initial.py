"""Initial schema: lookups, members, payments, daily activity, write-behind offsets.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
MONEY = sa.Numeric(10, 2)


def upgrade() -> None:
    op.create_table(
        "tiers",
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("monthly_fee", MONEY, nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_tiers"),
    )
    op.create_table(
        "statuses",
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_statuses"),
    )
    op.create_table(
        "countries",
        sa.Column("code", sa.String(2), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_countries"),
    )
    op.create_table(
        "members",
        sa.Column("id", BIG_ID, sa.Identity(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("first_name", sa.String(100), nullable=False),
        sa.Column("last_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("joined_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_members"),
        sa.ForeignKeyConstraint(["status"], ["statuses.code"], name="fk_members_status_statuses"),
        sa.ForeignKeyConstraint(["tier"], ["tiers.code"], name="fk_members_tier_tiers"),
        sa.ForeignKeyConstraint(
            ["country"], ["countries.code"], name="fk_members_country_countries"
        ),
    )
    op.create_index(
        "ux_members_email",
        "members",
        ["email"],
        unique=True,
        postgresql_ops={"email": "text_pattern_ops"},
    )
    for name in ("first_name", "last_name"):
        op.create_index(
            f"ix_members_{name}_lower",
            "members",
            [sa.func.lower(sa.column(name)).label(f"{name}_lower")],
            postgresql_ops={f"{name}_lower": "text_pattern_ops"},
        )
    for name in ("status", "tier", "country"):
        op.create_index(f"ix_members_{name}", "members", [name])

    op.create_table(
        "payments",
        sa.Column("id", BIG_ID, sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("paid_at", TIMESTAMP, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name="fk_payments_member_id_members",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("kind IN ('dues', 'event')", name="ck_payments_kind"),
    )
    op.create_index("ix_payments_member_id", "payments", ["member_id"])

    op.create_table(
        "member_activity_daily",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("checkins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("page_views", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("member_id", "day", name="pk_member_activity_daily"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name="fk_member_activity_daily_member_id_members",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "writebehind_offsets",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("last_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("stream", name="pk_writebehind_offsets"),
    )


def downgrade() -> None:
    for table in (
        "writebehind_offsets",
        "member_activity_daily",
        "payments",
        "members",
        "countries",
        "statuses",
        "tiers",
    ):
        op.drop_table(table)
