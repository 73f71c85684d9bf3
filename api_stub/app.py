"""The app factory: ``create_app(settings)`` builds the membership API stub.

The app's one lifespan opens the process's services (services.Services: one cache core under
the async front of the requests and the sync front of threadpool code, the Redis clients, the
database engine, the write-behind buffer and its recorder, the task client), sets
``app.state.running`` (api_stub.runtime.Running), starts the process's metrics publisher
(workers/publisher.py, role ``api``, on the durable Redis role: the cache counters and the
request latency per kind, which the minute snapshot merges with every other process's) and
stops it, then closes them all, when the app stops. The
activity routes, the management API and the dashboard only add routes and middleware and read
``app.state.running``; nobody else chains a lifespan. Redis down at start-up is logged, not
fatal: the breaker serves from the database until it answers.

The caching middleware answers cached routes before FastAPI routes them (api_stub.caching).
Every error, the data layer's included, is answered and documented as a problem document by
api_stub.problems (installed last, so it sees every route).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.concurrency import run_in_threadpool

from api_stub import problems, routes
from api_stub.activity import install as install_activity
from api_stub.caching import CacheMiddleware
from api_stub.dashboard import install as install_dashboard
from api_stub.keepcurrent import KeepCurrent
from api_stub.management import install as install_management
from api_stub.runtime import Running, started
from cache import AsyncCacheService
from cache.invalidation import replay_outbox
from config import Settings
from services import Services
from workers.publisher import Extra, MetricsPublisher

log = logging.getLogger("api_stub")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(running_app: FastAPI) -> AsyncIterator[None]:
        services = Services.open(settings, asyncio=True, tasks=True, near=True)
        publisher = MetricsPublisher(
            services.cache, "api", client=services.redis("durable"), extras=published
        )
        try:
            # Resolving the database URL may probe the local PostgreSQL: not on the loop.
            running = await run_in_threadpool(Running.over, services, publisher)
            await run_in_threadpool(running.db.fill_pool)
        except BaseException:
            await services.aclose()
            raise
        if not await running.cache.ping():
            log.warning("Redis is not answering: serving from the database until it does")
        running_app.state.running = running
        publisher.start()
        replaying = asyncio.create_task(replay_outbox(running.cache), name="outbox-replay")
        # What start-up built (modules, routes, schemas, clients: ~160,000 objects) lives as
        # long as the process: frozen out of the collector, a full collection under load walks
        # only what requests allocated (measured: ~0.5 s a collection otherwise, a fifth of
        # the activity route's time under wrk).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # an app of a process that builds another one (tests) is freed
            await keep_current.aclose()
            replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replaying
            running_app.state.running = None
            try:
                await run_in_threadpool(publisher.stop)  # publishes the final counters
            finally:
                await services.aclose()

    # No per-request OpenTelemetry probe: the platform publishes its own metrics
    # (cache.metrics), and the probe costs more than a cache hit's own work.
    telemetry = TelemetryConfig(tracing=False, metrics=False, logs=False)
    app = FastAPI(
        title="membership API (stub)", version="1", lifespan=lifespan, telemetry=telemetry
    )
    app.state.running = None
    app.state.settings = settings
    published: dict[str, Extra] = {}  # sections published beside the cache counters

    def cache() -> AsyncCacheService | None:
        found = started(app)
        return None if found is None else found.cache

    def shared_reads() -> AbstractAsyncContextManager[object]:
        found = started(app)
        return contextlib.nullcontext() if found is None else found.db.shared()

    keep_current = KeepCurrent(shared_reads)  # list pages readers read (api_stub.keepcurrent)

    app.include_router(routes.router)
    app.add_middleware(
        CacheMiddleware,
        cache=cache,
        routes=routes.router.routes,
        max_lag=settings.cache_max_lag_seconds,
        keep_current=keep_current,
    )
    install_activity(app)  # member activity, written behind
    management = install_management(app, settings)  # /api/v1/cache: operators only
    published["latency"] = management.latency.document
    install_dashboard(app, settings)  # /dashboard: a page over the routes above
    problems.install(app)  # every error a problem document, in the answers and the schema
    return app
