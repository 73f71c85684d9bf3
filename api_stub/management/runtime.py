"""What the management routes share: a view of the API process's services, plus their own.

Everything that holds a connection is the process's (services.Services, read from
``app.state.running``): the async cache front of the requests, the sync front over the same
cache core (for the published process counters, sync code run in the threadpool), the
database, the write-behind buffer and the task client (workers.client.TaskClient: enqueue,
progress, ``inspect ping``). The runtime adds what is the management API's own: its config and
tokens (bootstrap and stored), the rate limiter (on the durable Redis role), the auditor and
the latency recorder.

:class:`Holder` (``app.state.management``) builds the runtime on first use in each run of the
app's lifespan and keeps it for that run; it has nothing to close.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from api_stub.management.audit import Auditor
from api_stub.management.auth import TokenTable
from api_stub.management.config import ManagementConfig
from api_stub.management.latency import LatencyRecorder
from api_stub.management.ratelimit import RateLimiter
from api_stub.management.refusals import RefusalWatch
from api_stub.management.snapshots import LatestSnapshot
from api_stub.management.tokens import TokenStore
from api_stub.runtime import Database, Running, started
from cache import AsyncCacheService, CacheService
from cache.writebehind import WriteBehind
from config import Settings
from services import Services
from workers.alerts import AlertSender
from workers.client import TaskClient
from workers.publisher import process_id

PingWorkers = Callable[[float], Awaitable[list[str]]]


@dataclass
class ManagementRuntime:
    settings: Settings
    config: ManagementConfig
    tokens: TokenTable
    services: Services
    cache: AsyncCacheService
    db: Database
    limiter: RateLimiter
    auditor: Auditor
    latency: LatencyRecorder
    refusals: RefusalWatch
    token_store: TokenStore
    process: str = field(default_factory=lambda: process_id("api"))
    ping: PingWorkers | None = None
    snapshot: LatestSnapshot = field(init=False)

    def __post_init__(self) -> None:
        self.snapshot = LatestSnapshot(self.db)

    @classmethod
    def over(
        cls,
        running: Running,
        config: ManagementConfig,
        tokens: TokenTable,
        latency: LatencyRecorder,
    ) -> ManagementRuntime:
        services = running.services
        limiter = RateLimiter(
            running.cache, services.async_redis("durable"), config.rate_limit, config.rate_window_s
        )
        # The name this process publishes under: counted live, never again as "another".
        process = running.publisher.process if running.publisher else process_id("api")

        def alerts() -> AlertSender:
            return AlertSender(
                lambda alert: services.tasks.enqueue_alert(alert),
                services.redis("durable"),
                services.keys,
                process,
                bool(services.settings.alert_webhook_url.get_secret_value()),
            )

        refusals = RefusalWatch(
            running.cache,
            services.async_redis("durable"),
            alerts,
            config.refusal_threshold,
            config.refusal_window_s,
        )
        return cls(
            settings=services.settings,
            config=config,
            tokens=tokens,
            services=services,
            cache=running.cache,
            db=running.db,
            limiter=limiter,
            auditor=Auditor(running.db),
            latency=latency,
            refusals=refusals,
            token_store=TokenStore(tokens, services.async_redis("durable"), services.keys),
            process=process,
        )

    @property
    def sync_cache(self) -> CacheService:
        """The process's sync front: the same core (breaker, outbox, metrics) as ``cache``."""
        return self.services.cache

    @property
    def writebehind(self) -> WriteBehind:
        return self.services.writebehind

    @property
    def tasks(self) -> TaskClient:
        return self.services.tasks

    async def ping_workers(self, timeout: float) -> list[str]:
        """Names of the workers that answered ``celery inspect ping`` within ``timeout``."""
        if self.ping is not None:
            return await self.ping(timeout)

        def ping() -> list[str]:
            replies = self.tasks.app.control.ping(timeout=timeout) or []
            return sorted(name for reply in replies for name in reply)

        return await run_in_threadpool(ping)


@dataclass
class Holder:
    """Installed on ``app.state.management``: the runtime of the app's current run."""

    app: FastAPI
    config: ManagementConfig
    tokens: TokenTable
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    _runtime: ManagementRuntime | None = None

    @property
    def runtime(self) -> ManagementRuntime | None:
        """The runtime over the app's running services; None outside its lifespan."""
        running = started(self.app)
        if running is None:
            return None
        current = self._runtime
        if current is None or current.services is not running.services:
            current = ManagementRuntime.over(running, self.config, self.tokens, self.latency)
            self._runtime = current
        return current


async def management_of(request: Request) -> ManagementRuntime:
    """Dependency: the started management runtime, or 503 outside the lifespan (async: see
    api_stub.runtime.running)."""
    holder: Holder = request.app.state.management
    runtime = holder.runtime
    if runtime is None:
        raise HTTPException(503, "the management API is not started")
    return runtime
