"""What the management routes share, built when the app starts and closed when it stops.

Beside the app's own async cache and database (api_stub.runtime.Services) it holds a sync
cache front for the write-behind buffer and the published process counters (both sync code,
run in the threadpool), a Celery producer (workers.client.TaskClient: enqueue, progress,
``inspect ping``), the rate limiter and the auditor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from api_stub.management.audit import Auditor
from api_stub.management.auth import TokenTable
from api_stub.management.config import ManagementConfig
from api_stub.management.latency import LatencyRecorder
from api_stub.management.ratelimit import RateLimiter
from api_stub.runtime import Database, Services
from cache import AsyncCacheService, CacheService, build_cache
from cache.writebehind import WriteBehind, WriteBehindConfig
from config import Settings
from workers.client import TaskClient
from workers.publisher import process_id

PingWorkers = Callable[[float], Awaitable[list[str]]]


@dataclass
class ManagementRuntime:
    settings: Settings
    config: ManagementConfig
    tokens: TokenTable
    cache: AsyncCacheService
    db: Database
    sync_cache: CacheService
    writebehind: WriteBehind
    tasks: TaskClient
    limiter: RateLimiter
    auditor: Auditor
    latency: LatencyRecorder
    process: str = field(default_factory=lambda: process_id("api"))
    ping: PingWorkers | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        config: ManagementConfig,
        tokens: TokenTable,
        services: Services,
        latency: LatencyRecorder,
        tasks: TaskClient | None = None,
    ) -> ManagementRuntime:
        if services.cache is None or services.db is None:
            raise RuntimeError("the app's services must be started before management")
        sync_cache = build_cache(settings)
        writebehind = WriteBehind(
            sync_cache.clients.writer, sync_cache.keys, WriteBehindConfig.from_settings(settings)
        )
        return cls(
            settings=settings,
            config=config,
            tokens=tokens,
            cache=services.cache,
            db=services.db,
            sync_cache=sync_cache,
            writebehind=writebehind,
            tasks=tasks if tasks is not None else TaskClient(settings),
            limiter=RateLimiter(services.cache, config.rate_limit, config.rate_window_s),
            auditor=Auditor(services.db),
            latency=latency,
        )

    async def ping_workers(self, timeout: float) -> list[str]:
        """Names of the workers that answered ``celery inspect ping`` within ``timeout``."""
        if self.ping is not None:
            return await self.ping(timeout)

        def ping() -> list[str]:
            replies = self.tasks.app.control.ping(timeout=timeout) or []
            return sorted(name for reply in replies for name in reply)

        return await run_in_threadpool(ping)

    def close(self) -> None:
        self.tasks.close()
        self.sync_cache.close()


@dataclass
class Holder:
    """Installed on ``app.state.management``; the lifespan fills and empties it."""

    config: ManagementConfig
    tokens: TokenTable
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    runtime: ManagementRuntime | None = None


def management_of(request: Request) -> ManagementRuntime:
    """Dependency: the started management runtime, or 503 outside the lifespan."""
    holder: Holder = request.app.state.management
    if holder.runtime is None:
        raise HTTPException(503, "the management API is not started")
    return holder.runtime
