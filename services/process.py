"""The services of one process: one cache core, its fronts, Redis clients per role, one engine.

::

    Services
    ├── core            cache.flow.CacheCore: the process's one breaker, outbox and metrics
    ├── cache           the sync front (CacheService) over ``core``
    ├── async_cache     the asyncio front (AsyncCacheService) over the same ``core``;
    │                   only when opened with ``asyncio=True`` (the API)
    ├── redis(role)     the raw sync client of a Redis role, for platform state: write-behind
    │   async_redis(role)  streams, period guard, metrics publisher, rate limiter, leases
    ├── engine          the SQLAlchemy engine, built on first use (db/ is imported then)
    ├── consistency     the consistency monitor's samples (cache/consistency.py)
    ├── writebehind     the write-behind buffer (cache.writebehind.WriteBehind), durable role
    ├── recorder        its asyncio group recorder (asyncio processes)
    └── tasks           the task client (workers.client.TaskClient); ``tasks=True`` only

Both fronts share the core: a breaker opened by a failure seen through one front keeps the
other away from Redis too, an invalidation that failed through one goes to the one outbox,
and the metrics of both are one registry (what the process publishes and serves).

Redis roles (docs/architecture.md, config/redis_role.py): ``cache`` (evictable entries; the
fronts' clients) and ``durable`` (noeviction, AOF: write-behind streams, platform state:
leases, published metrics, alerts, refused tokens). With DURABLE_REDIS_* configured the
durable role has clients of its own; without, both roles are the fronts' clients (one Redis).

Prefork: a Services belongs to the process that built it. ``close`` in another process (a
forked child) drops it without touching the sockets, which belong to the parent.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Final, Literal

from cache import (
    AsyncCacheService,
    CacheCore,
    CacheRegion,
    CacheService,
    build_async_cache,
    build_cache,
)
from cache.client import AsyncClients, AsyncRedis, SyncClients, SyncRedis, connect, connect_async
from cache.consistency import MonitorConfig, Samples
from cache.keys import Keys
from cache.tracking import Tracker, tracker_for
from cache.writebehind import AsyncGroupRecorder, WriteBehind, WriteBehindConfig
from config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from workers.client import TaskClient

Role = Literal["cache", "durable"]
ROLES: Final[tuple[Role, ...]] = ("cache", "durable")


class Services:
    """Build with :meth:`open`; close with :meth:`close` (sync) or :meth:`aclose`."""

    def __init__(
        self,
        settings: Settings,
        core: CacheCore,
        cache: CacheService,
        async_cache: AsyncCacheService | None = None,
        tasks: TaskClient | None = None,
        database_url: str | None = None,
    ) -> None:
        if cache.core is not core or (async_cache is not None and async_cache.core is not core):
            raise ValueError("every front of a process runs over the process's one core")
        self.settings = settings
        self.core = core
        self.cache = cache
        self._async_cache = async_cache
        self._tasks = tasks
        self.pid = os.getpid()
        # Connecting builds pools only: nothing is dialled before the first command.
        shared = settings.durable_is_cache
        self._sync: dict[Role, SyncClients] = {
            "cache": cache.clients,
            "durable": cache.clients if shared else connect(settings, "durable"),
        }
        self._async: dict[Role, AsyncClients] = {}
        if async_cache is not None:
            self._async = {
                "cache": async_cache.clients,
                "durable": async_cache.clients if shared else connect_async(settings, "durable"),
            }
        self.consistency = Samples(core.keys, MonitorConfig.from_settings(settings))
        self.writebehind = WriteBehind(
            self.redis("durable"), core.keys, WriteBehindConfig.from_settings(settings)
        )
        self.recorder: AsyncGroupRecorder | None = (
            AsyncGroupRecorder(self.writebehind, self.async_redis("durable"))
            if async_cache is not None
            else None
        )
        self._database_url = database_url
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self.closed = False
        # The near tier serves nothing until its tracking connection is subscribed.
        self.tracker: Tracker | None = tracker_for(
            core.near,
            core.keys.tracked(core.near.types) if core.near is not None else [],
            cache.clients.writer,
        )
        if self.tracker is not None:
            self.tracker.start()

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        asyncio: bool = False,
        tasks: bool = False,
        database_url: str | None = None,
        near: bool = False,
    ) -> Services:
        """The services of this process. ``asyncio`` adds the async front (and the recorder)
        over the same core; ``tasks`` the task client; ``near`` the near tier and its
        tracking connection (CACHE_NEAR_ENABLED permitting). The API asks for it: it reads
        the same keys again and again. Workers (bulk writes, each key read once), beat and
        cachectl commands would only pay the tier's pushes and thread. Nothing here opens a
        connection: a Redis or database that is down is found by the first call, which the
        breaker (or the caller) handles."""
        core = CacheCore.from_settings(settings, with_near=near)
        cache = build_cache(settings, core=core)
        async_cache = build_async_cache(settings, core=core) if asyncio else None
        client: TaskClient | None = None
        if tasks:
            from workers.client import TaskClient  # workers.client imports the worker runtime

            client = TaskClient(settings)
        return cls(settings, core, cache, async_cache, client, database_url)

    # --- what the process holds ---------------------------------------------------------------
    @property
    def keys(self) -> Keys:
        return self.core.keys

    @property
    def async_cache(self) -> AsyncCacheService:
        if self._async_cache is None:
            raise RuntimeError("these services have no async front: open them with asyncio=True")
        return self._async_cache

    @property
    def tasks(self) -> TaskClient:
        if self._tasks is None:
            raise RuntimeError("these services have no task client: open them with tasks=True")
        return self._tasks

    def bind(self, *regions: CacheRegion) -> None:
        """Bind the application's cache regions (``@region.cached``) to this process's fronts:
        the sync one, and the async one when the process has it."""
        fronts: list[CacheService | AsyncCacheService] = [self.cache]
        if self._async_cache is not None:
            fronts.append(self._async_cache)
        for region in regions:
            region.bind(*fronts)

    def redis(self, role: Role) -> SyncRedis:
        """The sync client (the master) of a Redis role: ``"durable"`` for state that must
        not be evicted, ``"cache"`` for the cache's own keys."""
        return self._sync[role].writer

    def async_redis(self, role: Role) -> AsyncRedis:
        """The asyncio client (the master) of a Redis role; asyncio processes only."""
        if role not in self._async:
            raise RuntimeError("these services have no asyncio clients: open with asyncio=True")
        return self._async[role].writer

    @property
    def database_url(self) -> str:
        """The database URL (resolved on first use: it may probe the local PostgreSQL)."""
        with self._lock:
            if self._database_url is None:
                from db.engine import resolve_database_url

                self._database_url = resolve_database_url(self.settings)
            return self._database_url

    @property
    def engine(self) -> Engine:
        """The process's one engine, built on first use (it connects on first query)."""
        url = self.database_url
        with self._lock:
            if self._engine is None:
                from db.engine import make_engine

                self._engine = make_engine(url)
            return self._engine

    # --- lifetime -------------------------------------------------------------------------------
    def owned_here(self) -> bool:
        """False in a forked child: its sockets are the parent's."""
        return self.pid == os.getpid()

    def close(self) -> None:
        """Close the sync parts (the task client, the engine, the sync clients). Use
        :meth:`aclose` when an async front was built; it calls this too."""
        if self.closed:
            return
        self.closed = True
        if not self.owned_here():
            return
        try:
            if self.tracker is not None:
                self.tracker.stop()
            if self._tasks is not None:
                self._tasks.close()
        finally:
            try:
                if self._engine is not None:
                    self._engine.dispose()
            finally:
                if self._sync["durable"] is not self.cache.clients:
                    self._sync["durable"].close()
                self.cache.close()  # the cache role's clients

    async def aclose(self) -> None:
        """Close the async front and its clients, then everything :meth:`close` closes."""
        try:
            if self._async_cache is not None and not self.closed and self.owned_here():
                durable = self._async["durable"]
                if durable is not self._async_cache.clients:
                    await durable.close()
                await self._async_cache.close()
        finally:
            self.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
