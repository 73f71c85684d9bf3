"""The cache management API: /api/v1/cache/* for operators, behind bearer tokens with roles.

Modules::

    auth        tokens (SHA-256 digests only), roles viewer < operator < admin
    tokens      tokens added and revoked at run time (durable Redis), no restart
    guard       the dependency of every route: 401, 403, then the rate limit (429)
    ratelimit   fixed window per token in Redis; fail-open without Redis
    refusals    refused tokens counted per address / token label; a burst is one alert
    audit       every action recorded (db/audit.py) before it runs, closed with its outcome
    routes      the endpoints; health, figures, prometheus, clear do the work
    token_routes  /tokens: list, add, revoke (admin, audited)
    latency     cached vs uncached request latency, from the X-Cache header
    runtime     what the routes share: a view of the process's services (app.state.running)

:func:`install` adds the routes and the latency layer to an app made by
api_stub.app.create_app (which calls it); the connections are the app's own, opened by its
one lifespan::

    app = create_app(settings)      # installs it, tokens from MANAGEMENT_TOKENS
"""

from __future__ import annotations

from fastapi import FastAPI

from api_stub.management.auth import Principal, Role, TokenTable, hash_token
from api_stub.management.config import ManagementConfig
from api_stub.management.latency import LatencyMiddleware
from api_stub.management.routes import PREFIX, router
from api_stub.management.runtime import Holder, ManagementRuntime
from api_stub.management.token_routes import router as token_router
from config import Settings

__all__ = [
    "PREFIX",
    "ManagementConfig",
    "ManagementRuntime",
    "Principal",
    "Role",
    "TokenTable",
    "hash_token",
    "install",
    "router",
]


def install(
    app: FastAPI,
    settings: Settings,
    *,
    config: ManagementConfig | None = None,
    tokens: TokenTable | str | None = None,
) -> Holder:
    """Add the management routes and the latency layer to ``app``; its runtime is a view of
    the app's running services (``app.state.running``), built on first use in each run.

    ``config`` defaults to ManagementConfig.from_settings(settings); ``tokens`` (a table, or
    ``role:sha256hex[:label],...``) overrides its tokens.
    """
    config = config or ManagementConfig.from_settings(settings)
    if tokens is None:
        tokens = config.tokens
    table = tokens if isinstance(tokens, TokenTable) else TokenTable.parse(tokens)
    holder = Holder(app, config, table)
    app.state.management = holder
    app.include_router(router, max_body_size=config.max_body_bytes)
    app.include_router(token_router, max_body_size=config.max_body_bytes)
    app.add_middleware(LatencyMiddleware, recorder=holder.latency)
    return holder
