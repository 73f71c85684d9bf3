"""The member route under fastapi-cache (fastapi-cache2 with its Redis backend), as its README
shows it: ``@cache`` on the endpoint, FastAPICache.init with a RedisBackend in the lifespan.

The endpoint reads the member like the API's own route (the same query, a sync session in the
threadpool) and answers 404 for an unknown id; fastapi-cache stores what it returns as JSON
and, on a hit, decodes it and lets FastAPI serialize it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException
from fastapi_cache import FastAPICache
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache

from api_stub.runtime import Database
from config import load_settings
from db import queries
from db.engine import make_engine, resolve_database_url

MEMBER_TTL = 900  # the API's member TTL


def create() -> FastAPI:
    """uvicorn factory: settings from the environment."""
    settings = load_settings()
    database = Database(make_engine(resolve_database_url(settings)))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis(
            host=settings.redis_host, port=settings.redis_port, db=settings.redis_db
        )
        FastAPICache.init(RedisBackend(client), prefix=settings.redis_key_prefix + "fastapi-cache")
        try:
            yield
        finally:
            await client.aclose()
            database.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/v1/members/{member_id}")
    @cache(expire=MEMBER_TTL)
    async def get_member(member_id: int) -> dict[str, Any]:
        member = await database.read(lambda session: queries.get_member(session, member_id))
        if member is None:
            raise HTTPException(status_code=404)
        return member

    return app
