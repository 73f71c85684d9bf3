from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

import db.engine
from config import load_settings
from db import DatabaseUnavailable, get_member, make_async_engine, make_engine, session_factory
from db.engine import LOCAL_PG_URL, ensure_database, normalize_url, resolve_database_url
from db.errors import Conflict, InvalidData, translate
from tests.support.postgres import ADMIN_DSN, drop_database


def test_setting_wins_and_bare_postgres_urls_get_psycopg() -> None:
    settings = load_settings(database_url="postgresql://u@db.internal/members")
    assert resolve_database_url(settings) == "postgresql+psycopg://u@db.internal/members"
    assert normalize_url("postgres://h/x") == "postgresql+psycopg://h/x"
    assert normalize_url("sqlite:///a.db") == "sqlite:///a.db"


def test_local_postgresql_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    ensured: list[str] = []
    monkeypatch.setattr(db.engine, "port_answers", lambda host, port: True)
    monkeypatch.setattr(db.engine, "ensure_database", ensured.append)
    assert resolve_database_url(load_settings(database_url="")) == LOCAL_PG_URL
    assert ensured == [LOCAL_PG_URL]


def test_sqlite_file_when_nothing_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(db.engine, "port_answers", lambda host, port: False)
    monkeypatch.chdir(tmp_path)
    url = resolve_database_url(load_settings(database_url=""))
    assert url == f"sqlite:///{tmp_path / 'var' / 'membership.db'}"
    assert (tmp_path / "var").is_dir()


def test_port_probe() -> None:
    assert db.engine.port_answers("127.0.0.1", 1) is False


def test_ensure_database_creates_once(pg_url: str) -> None:
    name = f"{pg_url.rsplit('/', 1)[1]}_ensure"
    url = f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    try:
        assert ensure_database(url) is True
        assert ensure_database(url) is False
        with psycopg.connect(ADMIN_DSN) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert found.fetchone() == (1,)
    finally:
        drop_database(name)


def test_unreachable_database_raises_database_unavailable() -> None:
    engine = make_engine("postgresql+psycopg://root@127.0.0.1:1/nothing")
    try:
        with session_factory(engine)() as session, pytest.raises(DatabaseUnavailable):
            get_member(session, 1)
    finally:
        engine.dispose()


def test_translate_maps_integrity_errors() -> None:
    unique = sa_exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("dup"))
    foreign = sa_exc.IntegrityError("INSERT", {}, psycopg.errors.ForeignKeyViolation("fk"))
    assert isinstance(translate(unique), Conflict)
    assert isinstance(translate(foreign), InvalidData)
    assert translate(ValueError("a bug")) is None


def test_async_engine_is_postgresql_only() -> None:
    with pytest.raises(ValueError, match="PostgreSQL only"):
        make_async_engine("sqlite:///x.db")


def test_async_engine_on_postgresql() -> None:
    engine = make_async_engine("postgresql://root@127.0.0.1/postgres")
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
