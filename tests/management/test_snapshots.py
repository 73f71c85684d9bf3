"""The management routes' newest-snapshot reader, over the real PostgreSQL database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api_stub.management.snapshots import LatestSnapshot
from api_stub.runtime import Database
from db import reports
from db.engine import make_engine, session_factory
from tests.support.postgres import throwaway_database

pytestmark = pytest.mark.anyio
T = TypeVar("T")


class CountingDatabase(Database):
    """The real Database, counting the reads it runs."""

    reads = 0

    async def read(self, work: Callable[[Session], T]) -> T:
        self.reads += 1
        return await super().read(work)


@pytest.fixture
def engine() -> Iterator[Engine]:
    """A database of the test's own: the newest snapshot is the one it stored."""
    with throwaway_database("snapshots", members=0) as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def store(engine: Engine, payload: dict[str, Any]) -> None:
    with session_factory(engine).begin() as session:
        reports.add_snapshot(session, dt.datetime.now(dt.UTC), payload)


async def test_polls_within_the_age_share_one_read_and_a_new_snapshot_shows_after_it(
    engine: Engine,
) -> None:
    db = CountingDatabase(engine)
    reader = LatestSnapshot(db, max_age_s=0.5)
    store(engine, {"mark": "first"})
    first = await reader.get()
    assert first is not None and first["payload"] == {"mark": "first"}
    store(engine, {"mark": "second"})
    for _ in range(20):  # a dashboard and a load balancer polling
        assert (await reader.get()) == first
    assert db.reads == 1
    await anyio.sleep(0.6)
    second = await reader.get()
    assert second is not None and second["payload"] == {"mark": "second"}
    assert db.reads == 2


async def test_a_dead_database_keeps_the_last_snapshot_read(engine: Engine) -> None:
    store(engine, {"mark": "kept"})
    reader = LatestSnapshot(Database(engine), max_age_s=0.0)
    kept = await reader.get()
    assert kept is not None and kept["payload"] == {"mark": "kept"}
    dead = make_engine("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        reader.db = Database(dead)
        assert await reader.get() == kept  # its taken_at tells how old it is
        assert await LatestSnapshot(Database(dead)).get() is None  # none read yet
    finally:
        dead.dispose()
