"""The ceiling of any HTTP route on this server stack: a bare ASGI app answering constant bytes.

No Redis, no routing, no lookup: what uvicorn (one worker, uvloop + httptools) and wrk cost by
themselves. A near-tier hit can approach it, never pass it; bench.endpoints reports the member
route against it.
"""

from __future__ import annotations

from typing import Final

from starlette.types import Receive, Scope, Send

from bench._common import member_record

JSON: Final = [(b"content-type", b"application/json")]


class Ceiling:
    def __init__(self) -> None:
        import orjson

        self._body = orjson.dumps(member_record(1))  # the size of a member answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        status = 404 if scope["path"] == "/bench-ready" else 200
        await send({"type": "http.response.start", "status": status, "headers": JSON})
        await send({"type": "http.response.body", "body": self._body})


def create() -> Ceiling:
    """uvicorn factory."""
    return Ceiling()
