"""The app factory: ``create_app(settings)`` builds the membership API stub.

The lifespan opens the database engine and the async cache and closes them; the caching
middleware answers cached routes before FastAPI routes them (api_stub.caching). Errors of the
data layer become HTTP answers here, in one place::

    InvalidData          422, naming the field when a status, tier or country is unknown
    NotFound, UnknownLookup  404
    Conflict             409 (email taken, or the version given is not the member's)
    DatabaseUnavailable  503
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from fastapi.telemetry import TelemetryConfig
from starlette.concurrency import run_in_threadpool

from api_stub import routes
from api_stub.activity import install as install_activity
from api_stub.caching import CacheMiddleware
from api_stub.dashboard import install as install_dashboard
from api_stub.imports import ImportRejected
from api_stub.management import install as install_management
from api_stub.runtime import Database, Services
from cache import build_async_cache
from cache.invalidation import replay_outbox
from config import Settings
from db.engine import make_engine, resolve_database_url
from db.errors import Conflict, DatabaseUnavailable, InvalidData, NotFound, UnknownLookup

log = logging.getLogger("api_stub")

# psycopg names the violated constraint; the models name it fk_<table>_<column>_<referred>.
_FOREIGN_KEY: Final = re.compile(r"fk_members_(status|tier|country)_")


def create_app(settings: Settings) -> FastAPI:
    services = Services()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        url = await run_in_threadpool(resolve_database_url, settings)
        db = Database(make_engine(url))
        cache = build_async_cache(settings)
        if not await cache.ping():
            log.warning("Redis is not answering: serving from the database until it does")
        services.cache, services.db = cache, db
        replaying = asyncio.create_task(replay_outbox(cache), name="outbox-replay")
        try:
            yield
        finally:
            replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replaying
            services.cache = services.db = None
            await cache.close()
            db.close()

    # No per-request OpenTelemetry probe: the platform publishes its own metrics
    # (cache.metrics), and the probe costs more than a cache hit's own work.
    telemetry = TelemetryConfig(tracing=False, metrics=False, logs=False)
    app = FastAPI(
        title="membership API (stub)", version="1", lifespan=lifespan, telemetry=telemetry
    )
    app.state.services = services
    app.state.settings = settings
    app.include_router(routes.router)
    app.add_middleware(CacheMiddleware, cache=services.get_cache, routes=routes.router.routes)
    app.add_exception_handler(InvalidData, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(UnknownLookup, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(DatabaseUnavailable, _unavailable)
    app.add_exception_handler(ImportRejected, _rejected)
    install_activity(app, settings)  # member activity, written behind
    install_management(app, settings)  # /api/v1/cache: operators only
    install_dashboard(app, settings)  # /dashboard: a page over the routes above
    return app


def _problem(status: int, detail: Any) -> Response:
    return routes.json_response({"detail": detail}, status)


async def _invalid(_request: Request, exc: Exception) -> Response:
    message = str(exc)
    found = _FOREIGN_KEY.search(message)
    if found is not None:
        field = found.group(1)
        error = {"type": "value_error", "loc": ["body", field], "msg": f"unknown {field}"}
    else:
        error = {"type": "value_error", "loc": ["body"], "msg": message}
    return _problem(422, [error])


async def _not_found(_request: Request, exc: Exception) -> Response:
    return _problem(404, str(exc) or "Not Found")


async def _conflict(_request: Request, exc: Exception) -> Response:
    return _problem(409, str(exc))


async def _unavailable(_request: Request, exc: Exception) -> Response:
    log.error("database unavailable: %s", exc)
    return _problem(503, "the database is unavailable")


async def _rejected(_request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, ImportRejected) else 422
    return _problem(status, str(exc))
