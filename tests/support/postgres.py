"""Throwaway PostgreSQL databases for tests: created on the shared server, always dropped.

Tests never touch an existing database's tables: each session makes its own database, runs
the migrations (and seeds it when asked), and drops it WITH (FORCE) even when tests fail.
A server that does not answer fails the run; it is never a reason to skip.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from db.engine import make_engine, port_answers
from db.migrate import upgrade
from db.seed import seed

PG_HOST, PG_PORT = "127.0.0.1", 5432
ADMIN_DSN = f"postgresql://root@{PG_HOST}:{PG_PORT}/postgres"


def database_url(name: str, host: str = PG_HOST, port: int = PG_PORT) -> str:
    return f"postgresql+psycopg://root@{host}:{port}/{name}"


def create_database(label: str = "test", admin_dsn: str = ADMIN_DSN) -> str:
    name = f"mc_{label}_{secrets.token_hex(6)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str, admin_dsn: str = ADMIN_DSN) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


def prepared_database(
    label: str, *, members: int = 0, now: dt.datetime | None = None
) -> tuple[str, str]:
    """(name, URL) of a new, migrated database seeded with ``members`` members; the caller
    drops it (drop_database), as throwaway_database does."""
    assert port_answers(PG_HOST, PG_PORT), f"PostgreSQL must answer on {PG_HOST}:{PG_PORT}"
    name = create_database(label)
    try:
        url = database_url(name)
        upgrade(url)
        if members:
            engine = make_engine(url)
            try:
                seed(engine, members, progress=False, now=now)
            finally:
                engine.dispose()
    except BaseException:
        drop_database(name)
        raise
    return name, url


@contextmanager
def throwaway_database(
    label: str, *, members: int = 0, now: dt.datetime | None = None
) -> Iterator[str]:
    """URL of a new, migrated database seeded with ``members`` members; dropped on exit."""
    name, url = prepared_database(label, members=members, now=now)
    try:
        yield url
    finally:
        drop_database(name)
