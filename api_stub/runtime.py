"""What the routes share, read from ``app.state.running`` (None outside the app's lifespan).

The app's one lifespan (api_stub/app.py) opens the process's services (services.Services:
one cache core under an async front for requests and a sync front for threadpool code, the
Redis clients, the engine, the write-behind buffer, the task client) and sets a
:class:`Running` over them; the routes, the caching middleware, the activity routes and the
management API read it. Nothing here builds a client or an engine of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api_stub.lagging import LaggingValues
from api_stub.problems import DATABASE_UNAVAILABLE, raises
from cache import AsyncCacheService
from db.engine import session_factory
from services import Services
from workers.publisher import MetricsPublisher

T = TypeVar("T")
log = logging.getLogger("api_stub")


@dataclass(frozen=True, slots=True)
class _Shared:
    session: Session
    owner: asyncio.Task[object] | None


# The session the reads of one task share (Database.shared), in that task's context.
_SHARED: ContextVar[_Shared | None] = ContextVar("shared_session", default=None)


class Database:
    """Sync SQLAlchemy sessions run in the threadpool (the async engine would need greenlet).

    ``read`` runs in a transaction that is rolled back; ``query`` runs one statement with no
    transaction around it; ``write`` commits when the work returns, so whatever follows a
    ``write`` (the cache invalidation) runs after the commit. Inside :meth:`shared`, the
    task's reads share one session.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        # Autocommit: the driver sends no BEGIN and no ROLLBACK (psycopg sets it on the
        # connection, no round trip of its own).
        self._statements = session_factory(engine.execution_options(isolation_level="AUTOCOMMIT"))

    async def read(self, work: Callable[[Session], T]) -> T:
        return await self._in_thread(work, self._sessions)

    async def query(self, work: Callable[[Session], T]) -> T:
        """``work`` that runs a single statement (a record, a page, a count), outside any
        transaction: a miss's read is then two round trips (the pool's ping, the statement)
        instead of four, and as consistent, since each statement under READ COMMITTED reads
        its own snapshot in a transaction too. Inside :meth:`shared`, the shared session."""
        return await self._in_thread(work, self._statements)

    async def _in_thread(self, work: Callable[[Session], T], sessions: Callable[[], Session]) -> T:
        """``work`` in the threadpool: in the task's shared session (:meth:`shared`), else in
        a session of its own from ``sessions``."""
        shared = _SHARED.get()
        # Only the task that opened it: a task it starts copies the context, not the right.
        if shared is not None and shared.owner is asyncio.current_task():
            return await run_in_threadpool(self._read_shared, shared.session, work)
        return await run_in_threadpool(self._alone, sessions, work)

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """The reads this task makes until the block ends share one session: one connection
        checkout (and its ping) and one transaction, rolled back at the end (the refresh
        of many list pages, api_stub.keepcurrent)."""
        session = self._sessions()
        token = _SHARED.set(_Shared(session, asyncio.current_task()))
        try:
            yield
        finally:
            _SHARED.reset(token)
            await run_in_threadpool(session.close)

    @staticmethod
    def _read_shared(session: Session, work: Callable[[Session], T]) -> T:
        try:
            return work(session)
        except BaseException:
            # The block's next read starts on a clean transaction (or a new connection: a
            # rollback on a dead one fails too, and must not hide the first error).
            with contextlib.suppress(Exception):
                session.rollback()
            raise

    async def write(self, work: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self._write, work)

    @staticmethod
    def _alone(sessions: Callable[[], Session], work: Callable[[Session], T]) -> T:
        with sessions() as session:
            return work(session)

    def _write(self, work: Callable[[Session], T]) -> T:
        with self._sessions.begin() as session:
            return work(session)

    def fill_pool(self) -> int:
        """Open the pool's connections before the first request, so the first readers do not
        each wait for a new server process (a connection costs 3 ms of PostgreSQL's start-up
        on an idle machine, a round trip 0.1 ms). Stops at the first failure: a database that
        is down is the routes' to report. Returns how many were opened."""
        size = getattr(self.engine.pool, "size", lambda: 0)()
        held: list[Any] = []
        try:
            for _ in range(size):
                held.append(self.engine.connect())
        except Exception as exc:  # the routes answer 503 until it is back
            log.warning("database not answering at start-up: %s", exc)
        finally:
            for connection in held:
                connection.close()
        return len(held)

    def close(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True, slots=True)
class Running:
    """The started API process: its services, and the views of them the routes use."""

    services: Services
    cache: AsyncCacheService  # services.async_cache
    db: Database  # sessions on services.engine, run in the threadpool
    lagging: LaggingValues  # values routes compute within their kind's lag (the list totals)
    publisher: MetricsPublisher | None = None  # the process's counters, published (app.py)

    @classmethod
    def over(cls, services: Services, publisher: MetricsPublisher | None = None) -> Running:
        lagging = LaggingValues(services.settings.cache_max_lag_seconds)
        return cls(services, services.async_cache, Database(services.engine), lagging, publisher)


def started(app: FastAPI) -> Running | None:
    """The app's running services, or None outside its lifespan."""
    found: Running | None = getattr(app.state, "running", None)
    return found


@raises(DATABASE_UNAVAILABLE)  # a route given the services reads or writes the database
async def running(request: Request) -> Running:
    """Dependency: the started services of the app serving the request. Async though it
    awaits nothing: FastAPI runs a plain function in its thread pool, a thread hop per
    request (and under load a wait for the GIL) to read an attribute."""
    found = started(request.app)
    if found is None:
        raise RuntimeError("the app is not started: run it under its lifespan")
    return found
