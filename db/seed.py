"""Realistic demo data: lookups, members and their payments, fast enough for a million members.

PostgreSQL is loaded with COPY ... FREEZE into freshly truncated tables, with the secondary
indexes and foreign keys dropped for the load and recreated after it, all in one transaction:
building an index once is far cheaper than maintaining it row by row, and re-adding a foreign
key validates it with one join instead of a trigger per row. SQLite gets executemany batches.

Row generation runs in this process while the server parses and writes, so the two cores of
a small machine both work.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import Connection, Engine, Table, delete, insert, text
from sqlalchemy.dialects import postgresql, sqlite

from db import demo_data as demo
from db.demo_data import DAY, DemoRows, MemberBatch, PaymentBatch
from db.errors import translating
from db.models import Base, Member, MemberActivityDaily, Payment

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
MEMBER_COLUMNS = (
    "id, email, first_name, last_name, status, tier, country, birth_date,"
    " joined_at, updated_at, version"
)
PAYMENT_COLUMNS = "id, member_id, amount, paid_at, kind"


@dataclass(frozen=True)
class SeedReport:
    dialect: str
    members: int
    payments: int
    tiers: int
    statuses: int
    countries: int
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, for tuning


def seed(
    engine: Engine,
    members: int,
    *,
    progress: bool = True,
    seed: int = 42,
    now: dt.datetime | None = None,
) -> SeedReport:
    """Load demo data: lookups, ``members`` members and about three payments each.

    Destructive: members, payments and member_activity_daily are emptied first (TRUNCATE on
    PostgreSQL, DELETE on SQLite); lookup rows are upserted, writebehind_offsets is left alone.
    The same seed and ``now`` give the same rows. Afterwards the tables are ANALYZEd and the
    identity sequences continue after the largest id.
    """
    if members < 0:
        raise ValueError("members must be >= 0")
    began = time.perf_counter()
    gen = DemoRows(members, seed, now or dt.datetime.now(dt.UTC))
    phases: dict[str, float] = {}
    dialect = engine.dialect.name
    with _progress(progress) as bar, translating():
        member_task = bar.add_task("members", total=members)
        mean = sum(
            c * w for c, w in zip(demo.PAYMENT_COUNTS, demo.PAYMENT_COUNT_WEIGHTS, strict=True)
        ) / sum(demo.PAYMENT_COUNT_WEIGHTS)
        payment_task = bar.add_task("payments", total=round(members * mean))
        loader = _load_postgresql if dialect == "postgresql" else _load_sqlite
        payments = loader(engine, gen, bar, member_task, payment_task, phases)
    return SeedReport(
        dialect=dialect,
        members=members,
        payments=payments,
        tiers=len(demo.TIERS),
        statuses=len(demo.STATUSES),
        countries=len(demo.COUNTRIES),
        seconds=round(time.perf_counter() - began, 3),
        phases=phases,
    )


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


class _Phases:
    """Times consecutive phases into a dict."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases, self.mark = phases, time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self.mark, 3)
        self.mark = now


def _upsert_lookups(conn: Connection) -> None:
    dialect_insert: Callable[[Table], Any] = (
        postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    )
    tiers = [
        {"code": code, "name": name, "monthly_fee": fee, "rank": rank}
        for code, name, fee, rank, _share in demo.TIERS
    ]
    rows: Sequence[tuple[str, list[dict[str, Any]]]] = (
        ("tiers", tiers),
        ("statuses", [{"code": s[0], "name": s[1]} for s in demo.STATUSES]),
        ("countries", [{"code": c[0], "name": c[1]} for c in demo.COUNTRIES]),
    )
    for name, values in rows:
        table = Base.metadata.tables[name]
        stmt = dialect_insert(table).values(values)
        updates = {c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key}
        conn.execute(stmt.on_conflict_do_update(index_elements=["code"], set_=updates))


# --- PostgreSQL -----------------------------------------------------------------------------

SECONDARY_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid), i.indexrelid::regclass::text
FROM pg_index i
WHERE i.indrelid = ANY(CAST(:tables AS regclass[]))
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""
FOREIGN_KEYS = """
SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid)
FROM pg_constraint
WHERE contype = 'f' AND conrelid = ANY(CAST(:tables AS regclass[]))
"""

# Ids were supplied explicitly; the identities must continue after the largest one.
RESET_SEQUENCES = (
    "SELECT setval(pg_get_serial_sequence('members', 'id'), COALESCE(max(id), 0) + 1, false)"
    " FROM members",
    "SELECT setval(pg_get_serial_sequence('payments', 'id'), COALESCE(max(id), 0) + 1, false)"
    " FROM payments",
)


def _load_postgresql(
    engine: Engine,
    gen: DemoRows,
    bar: Progress,
    member_task: TaskID,
    payment_task: TaskID,
    phases: dict[str, float],
) -> int:
    clock = _Phases(phases)
    tables = ["members", "payments"]
    payments = 0
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        conn.exec_driver_sql("TRUNCATE member_activity_daily, payments, members RESTART IDENTITY")
        _upsert_lookups(conn)
        indexes = conn.execute(text(SECONDARY_INDEXES), {"tables": tables}).all()
        foreign_keys = conn.execute(text(FOREIGN_KEYS), {"tables": tables}).all()
        for table, name, _definition in foreign_keys:
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        for _definition, name in indexes:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        clock.done("prepare")

        render = _TextRenderer(gen)
        raw = conn.connection.driver_connection
        assert raw is not None
        # FREEZE: the tables were truncated in this transaction, so rows can be written frozen
        # and all-visible, which spares the first readers a pass of hint-bit writes.
        with raw.cursor() as cur:
            copy_members = f"COPY members ({MEMBER_COLUMNS}) FROM STDIN WITH (FREEZE)"
            with cur.copy(copy_members) as copy:
                for batch in gen.members():
                    copy.write(render.members(batch))
                    bar.advance(member_task, len(batch.ids))
            clock.done("copy_members")
            copy_payments = f"COPY payments ({PAYMENT_COLUMNS}) FROM STDIN WITH (FREEZE)"
            with cur.copy(copy_payments) as copy:
                for paid in gen.payments():
                    copy.write(render.payments(paid))
                    payments += len(paid.ids)
                    bar.update(payment_task, completed=payments)
            bar.update(payment_task, total=payments)
            clock.done("copy_payments")

        for definition, _name in indexes:
            conn.exec_driver_sql(definition)
        clock.done("indexes")
        for table, name, definition in foreign_keys:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        clock.done("foreign_keys")
        for statement in RESET_SEQUENCES:
            conn.exec_driver_sql(statement)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE members, payments, tiers, statuses, countries")
    clock.done("analyze")
    return payments


class _TextRenderer:
    """COPY text lines. Dates and times come from lookup tables: formatting a datetime per
    value would cost more than everything else in the load together."""

    def __init__(self, gen: DemoRows) -> None:
        self.days = {
            day: dt.date.fromordinal(day + EPOCH_ORDINAL).isoformat()
            for day in range(gen.start // DAY - 1, gen.now // DAY + 2)
        }
        self.times = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(DAY)]
        lo, hi = dt.date(1940, 1, 1).toordinal(), dt.date(2008, 12, 31).toordinal()
        self.dates = {o: dt.date.fromordinal(o).isoformat() for o in range(lo, hi + 1)}

    def members(self, b: MemberBatch) -> str:
        days, times, dates = self.days, self.times, self.dates
        return "".join(
            [
                f"{b.ids[i]}\t{b.emails[i]}\t{b.first[i]}\t{b.last[i]}\t{b.status[i]}"
                f"\t{b.tier[i]}\t{b.country[i]}\t{dates[b.birth[i]]}"
                f"\t{days[b.joined[i] // DAY]} {times[b.joined[i] % DAY]}"
                f"\t{days[b.updated[i] // DAY]} {times[b.updated[i] % DAY]}\t{b.version[i]}\n"
                for i in range(len(b.ids))
            ]
        )

    def payments(self, p: PaymentBatch) -> str:
        days, times = self.days, self.times
        return "".join(
            [
                f"{p.ids[i]}\t{p.member_id[i]}\t{p.amount[i]}"
                f"\t{days[p.paid[i] // DAY]} {times[p.paid[i] % DAY]}\t{p.kind[i]}\n"
                for i in range(len(p.ids))
            ]
        )


# --- SQLite ---------------------------------------------------------------------------------


def _load_sqlite(
    engine: Engine,
    gen: DemoRows,
    bar: Progress,
    member_task: TaskID,
    payment_task: TaskID,
    phases: dict[str, float],
) -> int:
    clock = _Phases(phases)
    payments = 0

    def when(seconds: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)

    with engine.begin() as conn:
        for model in (MemberActivityDaily, Payment, Member):
            conn.execute(delete(model))
        _upsert_lookups(conn)
        for b in gen.members():
            rows = [
                {
                    "id": b.ids[i], "email": b.emails[i], "first_name": b.first[i],
                    "last_name": b.last[i], "status": b.status[i], "tier": b.tier[i],
                    "country": b.country[i], "birth_date": dt.date.fromordinal(b.birth[i]),
                    "joined_at": when(b.joined[i]), "updated_at": when(b.updated[i]),
                    "version": b.version[i],
                }
                for i in range(len(b.ids))
            ]  # fmt: skip
            conn.execute(insert(Member), rows)
            bar.advance(member_task, len(rows))
        clock.done("insert_members")
        for p in gen.payments():
            rows = [
                {
                    "id": p.ids[i], "member_id": p.member_id[i],
                    "amount": Decimal(p.amount[i]), "paid_at": when(p.paid[i]),
                    "kind": p.kind[i],
                }
                for i in range(len(p.ids))
            ]  # fmt: skip
            if rows:
                conn.execute(insert(Payment), rows)
            payments += len(rows)
            bar.update(payment_task, completed=payments)
        bar.update(payment_task, total=payments)
        clock.done("insert_payments")
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    clock.done("analyze")
    return payments
