"""The floor of any cached member route: a bare ASGI app answering the stored bytes from Redis.

No routing, no validation, no envelope checks, no headers beyond the content type: the last
path segment names the member, its key is read with one GET and the JSON body of the stored
envelope is sent as it is. Whatever a real cached route costs above this is its own overhead.
Served by bench.endpoints with the same uvicorn settings as the API.

:func:`create` reads with redis.asyncio (the floor as anyone would write it);
:func:`create_direct` with the project's pipelined reader (cache/aiodirect.py), which isolates
what the API's own routing and envelope handling cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio as aioredis
from starlette.types import Receive, Scope, Send

from cache import Keys
from cache.aiodirect import DirectAsyncReader
from cache.codec import HEADER_SIZE
from config import Settings, load_settings

NOT_FOUND: Final = b'{"detail":"Not Found"}'
JSON: Final = [(b"content-type", b"application/json")]


class Floor:
    def __init__(self, settings: Settings, *, direct: bool = False) -> None:
        self._keys = Keys(settings.redis_key_prefix)
        self._redis = aioredis.Redis(
            host=settings.redis_host, port=settings.redis_port, db=settings.redis_db
        )
        self._direct = DirectAsyncReader(self._redis.connection_pool) if direct else None
        self._get: Callable[[str], Awaitable[Any]] = (
            self._direct.get if self._direct else self._redis.get
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        member_id = scope["path"].rpartition("/")[2]
        raw = await self._get(self._keys.member(member_id))
        status, body = (200, raw[HEADER_SIZE:]) if raw else (404, NOT_FOUND)
        await send({"type": "http.response.start", "status": status, "headers": JSON})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._direct is not None:
                    self._direct.close()
                await self._redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create() -> Floor:
    """uvicorn factory: settings from the environment."""
    return Floor(load_settings())


def create_direct() -> Floor:
    """uvicorn factory of the floor on the project's pipelined reader."""
    return Floor(load_settings(), direct=True)
