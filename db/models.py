"""The schema: members, their payments and daily activity, lookups, write-behind offsets.

Types are chosen to run unchanged on PostgreSQL and SQLite: BIGINT identity keys become
INTEGER PRIMARY KEY (rowid) on SQLite, which is what autoincrements there.

Indexes exist for a query in db/queries.py or a foreign key that is deleted through; the
analytics are full scans by design and get none.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(10, 2)
Timestamp = DateTime(timezone=True)

PAYMENT_KINDS = ("dues", "event")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tier(Base):
    __tablename__ = "tiers"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    monthly_fee: Mapped[Decimal] = mapped_column(Money)
    rank: Mapped[int] = mapped_column(SmallInteger)  # display order, cheapest first


class Status(Base):
    __tablename__ = "statuses"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


class Country(Base):
    __tablename__ = "countries"

    code: Mapped[str] = mapped_column(String(2), primary_key=True)  # ISO 3166-1 alpha-2
    name: Mapped[str] = mapped_column(String(64))


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    # Stored lower-cased by the write functions, so equality and prefix search need no lower().
    email: Mapped[str] = mapped_column(String(254))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(ForeignKey("statuses.code"))
    tier: Mapped[str] = mapped_column(ForeignKey("tiers.code"))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    joined_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    # Bumped on every update: the cache compares it to drop stale write-throughs.
    version: Mapped[int] = mapped_column(Integer, server_default="1")

    __table_args__ = (
        # text_pattern_ops: the database collation is not "C", so a plain btree cannot serve
        # LIKE 'prefix%'. This one index serves both uniqueness and email prefix search.
        Index(
            "ux_members_email", "email", unique=True, postgresql_ops={"email": "text_pattern_ops"}
        ),
        # list_members filters; each is selective for its rarer values and they bitmap-AND.
        Index("ix_members_status", "status"),
        Index("ix_members_tier", "tier"),
        Index("ix_members_country", "country"),
    )


# Case-insensitive name prefix search (list_members q=...).
for _name in ("first_name", "last_name"):
    Index(
        f"ix_members_{_name}_lower",
        func.lower(Member.__table__.c[_name]).label(f"{_name}_lower"),
        postgresql_ops={f"{_name}_lower": "text_pattern_ops"},
    )


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id", ondelete="CASCADE"), index=True
    )
    amount: Mapped[Decimal] = mapped_column(Money)
    paid_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    kind: Mapped[str] = mapped_column(String(8))

    __table_args__ = (CheckConstraint("kind IN ('dues', 'event')", name="kind"),)


class MemberActivityDaily(Base):
    __tablename__ = "member_activity_daily"

    # The primary key's leading member_id also serves the cascade from members.
    member_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    logins: Mapped[int] = mapped_column(Integer, server_default="0")
    checkins: Mapped[int] = mapped_column(Integer, server_default="0")
    page_views: Mapped[int] = mapped_column(Integer, server_default="0")
    # The newest sighting of the day. A member's last_seen_at is that of its newest day
    # (db/queries.py): the flush writes one row a member and day, never the members row,
    # whose update would cost as much as the whole upsert.
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class WritebehindOffset(Base):
    """The last stream entry flushed, written in the same transaction as the data it covers."""

    __tablename__ = "writebehind_offsets"

    stream: Mapped[str] = mapped_column(Text, primary_key=True)
    last_id: Mapped[str] = mapped_column(Text)


# JSONB on PostgreSQL (indexable, compact); plain JSON text on SQLite.
Document = JSON().with_variant(JSONB(), "postgresql")


class MetricsSnapshot(Base):
    """One metrics snapshot a minute: merged process counters, Redis INFO, key distribution."""

    __tablename__ = "metrics_snapshots"

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    # Range reads (reports, the dashboard) and pruning both go by time.
    taken_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(Document)


class MaintenanceReport(Base):
    """What a maintenance job found for one period; at most one row per (job, period)."""

    __tablename__ = "maintenance_reports"

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    job: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(16))  # workers.periods ids: 2025-11-25, 2025-W48
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    status: Mapped[str] = mapped_column(String(16))  # ok | alert | no_data | failed
    alert: Mapped[str | None] = mapped_column(Text)  # why, when status is not ok
    payload: Mapped[dict[str, Any]] = mapped_column(Document)

    __table_args__ = (
        # The per-period idempotence of the jobs, enforced by the database as well; it also
        # serves "the reports of one job, newest period first".
        Index("ux_maintenance_reports_job_period", "job", "period", unique=True),
        CheckConstraint("status IN ('ok', 'alert', 'no_data', 'failed')", name="status"),
    )
