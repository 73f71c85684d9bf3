"""Where the database is, and engines and sessions for it.

The URL comes from ``DATABASE_URL`` when set. Otherwise the local PostgreSQL is used when it
answers on 127.0.0.1:5432 (its ``membership`` database is created on first use), and failing
that an embedded SQLite file, ``var/membership.db`` under the working directory, so a laptop
without services still runs everything.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from db.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from config import Settings

LOCAL_PG_HOST = "127.0.0.1"
LOCAL_PG_PORT = 5432
LOCAL_PG_URL = f"postgresql+psycopg://root@{LOCAL_PG_HOST}:{LOCAL_PG_PORT}/membership"
SQLITE_PATH = Path("var") / "membership.db"
PROBE_TIMEOUT = 0.3  # a local server answers in microseconds; anything slower is not there


def resolve_database_url(settings: Settings) -> str:
    """The database URL: the setting, else the local PostgreSQL, else the SQLite file."""
    if settings.database_url:
        return normalize_url(settings.database_url)
    if port_answers(LOCAL_PG_HOST, LOCAL_PG_PORT):
        ensure_database(LOCAL_PG_URL)
        return LOCAL_PG_URL
    path = SQLITE_PATH.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def port_answers(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when a TCP connection to host:port opens within the timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def normalize_url(url: str) -> str:
    """Point bare PostgreSQL URLs at psycopg 3, the only PostgreSQL driver installed."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of the URL when missing; True when it was created."""
    target = make_url(url)
    name = target.database
    if target.get_backend_name() != "postgresql" or not name:
        return False
    try:
        admin = _libpq_dsn(target.set(database="postgres"))
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found:
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                return False  # another process won the race; the database is there either way
            return True
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"PostgreSQL at {target.host}:{target.port} answered but database {name!r} could not"
            f" be checked or created ({str(exc).strip()}); set DATABASE_URL"
        ) from exc


def _libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, **options: Any) -> Engine:
    """A pooled, pre-pinged engine; SQLite gets foreign keys on and WAL journaling."""
    url = normalize_url(url)
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    options.setdefault("pool_pre_ping", True)
    if not is_sqlite:
        # A reconnect after a server restart should not wait on half-dead pooled sockets.
        options.setdefault("pool_recycle", 1800)
        options.setdefault("connect_args", {"connect_timeout": 5})
    engine = create_engine(url, **options)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default; cascades depend on it
        cursor.execute("PRAGMA journal_mode = WAL")  # readers do not block the writer
        cursor.execute("PRAGMA busy_timeout = 5000")
    finally:
        cursor.close()


def make_async_engine(url: str, **options: Any) -> AsyncEngine:
    """An asyncio engine on psycopg 3. PostgreSQL only: aiosqlite is not installed.

    SQLAlchemy's asyncio layer also needs the ``greenlet`` package (``sqlalchemy[asyncio]``);
    without it this raises ImportError naming the missing package.
    """
    url = normalize_url(url)
    if make_url(url).get_backend_name() != "postgresql":
        raise ValueError("the async engine supports PostgreSQL only (aiosqlite is not installed)")
    from sqlalchemy.ext.asyncio import create_async_engine

    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_recycle", 1800)
    return create_async_engine(url, **options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (results are turned into dicts)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
