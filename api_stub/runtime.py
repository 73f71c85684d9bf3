"""What the routes share: the database and the async cache, built by the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cache import AsyncCacheService
from db.engine import session_factory

T = TypeVar("T")


class Database:
    """Sync SQLAlchemy sessions run in the threadpool (the async engine would need greenlet).

    ``read`` runs in a transaction that is rolled back; ``write`` commits when the work
    returns, so whatever follows a ``write`` (the cache invalidation) runs after the commit.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    async def read(self, work: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self._read, work)

    async def write(self, work: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self._write, work)

    def _read(self, work: Callable[[Session], T]) -> T:
        with self._sessions() as session:
            return work(session)

    def _write(self, work: Callable[[Session], T]) -> T:
        with self._sessions.begin() as session:
            return work(session)

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Services:
    """Filled by the lifespan; None outside it."""

    cache: AsyncCacheService | None = None
    db: Database | None = None

    def get_cache(self) -> AsyncCacheService | None:
        return self.cache


@dataclass(frozen=True, slots=True)
class Running:
    cache: AsyncCacheService
    db: Database


def running(request: Request) -> Running:
    """Dependency: the started services of the app serving the request."""
    services: Services = request.app.state.services
    if services.cache is None or services.db is None:
        raise RuntimeError("the app is not started: run it under its lifespan")
    return Running(services.cache, services.db)
