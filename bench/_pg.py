"""A throwaway PostgreSQL database for a benchmark, and its query counts from pg_stat_database.

pg_stat_statements is not loaded on the shared server (it needs shared_preload_libraries and a
restart), so queries are counted per transaction: every database call of the API is one
transaction, a read rolled back (xact_rollback) and a write committed (xact_commit). A backend
publishes its counters when idle for a while or when it exits; :func:`settled` waits until
every other backend of the database has gone, so stop the servers before reading.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from db.engine import make_engine
from db.migrate import upgrade
from db.seed import seed

ADMIN_DSN: Final = "postgresql://root@127.0.0.1:5432/postgres"
# PostgreSQL 15 flushes an idle backend's statistics about 10 s after its last transaction.
STATS_FLUSH_S: Final = 11.0


@dataclass(frozen=True)
class Seeded:
    name: str
    url: str  # SQLAlchemy URL
    dsn: str  # libpq DSN, for the statistics
    members: int
    payments: int
    seconds: float  # to seed
    size_mb: float


@dataclass(frozen=True)
class Counts:
    reads: int  # transactions rolled back: the API's reads
    writes: int  # transactions committed: the API's writes
    tuples: int  # rows returned by scans (tup_returned + tup_fetched)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.reads - other.reads, self.writes - other.writes, self.tuples - other.tuples
        )

    @property
    def transactions(self) -> int:
        return self.reads + self.writes


def create_seeded(members: int) -> Seeded:
    """A new database, migrated, seeded with ``members`` members and settled (vacuumed,
    dirty pages flushed: a live system is not measured while autovacuum and the checkpointer
    digest millions of new rows). The caller drops it (:func:`drop`)."""
    name = f"mc_bench_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = f"postgresql://root@127.0.0.1:5432/{name}"
    try:
        url = f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
        upgrade(url)
        engine = make_engine(url)
        try:
            report = seed(engine, members, progress=False)
        finally:
            engine.dispose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    except BaseException:
        drop(name)
        raise
    return Seeded(
        name=name,
        url=url,
        dsn=dsn,
        members=report.members,
        payments=report.payments,
        seconds=report.seconds,
        size_mb=(size[0] if size else 0) / 1e6,
    )


def clone(template: Seeded) -> Seeded:
    """A copy of ``template`` (CREATE DATABASE ... TEMPLATE: a file copy, no re-seeding), so
    two runs start from the same rows; nothing may be connected to the template meanwhile."""
    name = f"mc_bench_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template.name)
            )
        )
    return Seeded(
        name=name,
        url=f"postgresql+psycopg://root@127.0.0.1:5432/{name}",
        dsn=f"postgresql://root@127.0.0.1:5432/{name}",
        members=template.members,
        payments=template.payments,
        seconds=0.0,
        size_mb=template.size_mb,
    )


def drop(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def throwaway(members: int) -> Iterator[Seeded]:
    """:func:`create_seeded`, dropped after."""
    seeded = create_seeded(members)
    try:
        yield seeded
    finally:
        drop(seeded.name)


def quiet(dsn: str, timeout: float = 300.0) -> None:
    """Wait until no other backend of the database runs a statement (a load has drained)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'active'"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.2)


def settled(dsn: str, timeout: float = 30.0) -> Counts:
    """The database's counters once no other backend is connected to it.

    Reading costs the counters what :func:`reading_cost` measures.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if (row is not None and row[0] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return _counts(conn)


def _counts(conn: psycopg.Connection[Any]) -> Counts:
    found = conn.execute(
        "SELECT xact_rollback, xact_commit, tup_returned + tup_fetched"
        " FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    conn.rollback()
    if found is None:
        raise RuntimeError("pg_stat_database has no row for the benchmark database")
    return Counts(int(found[0]), int(found[1]), int(found[2]))


def counted(dsn: str, flush_s: float = STATS_FLUSH_S) -> Counts:
    """The database's counters while the platform stays connected: once no statement runs,
    after its idle backends have flushed their statistics (at most ``flush_s`` later)."""
    quiet(dsn)
    time.sleep(flush_s)
    with psycopg.connect(dsn) as conn:
        return _counts(conn)


def reading_cost(dsn: str) -> Counts:
    """What one :func:`settled` adds to the counters (its own connection's work)."""
    first = settled(dsn)
    return settled(dsn) - first
