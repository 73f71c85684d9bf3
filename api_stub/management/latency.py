"""Request latency of the cached routes, cached vs uncached, measured where the client sees it.

The caching middleware marks every answer of a cached route ``X-Cache: HIT | STALE | MISS``
(api_stub.caching). This outermost ASGI layer times each request from its arrival to the
last body byte and files it by that header: HIT and STALE are "cached", MISS "uncached";
answers without the header (other routes) are not recorded. The cost is two clock reads and
a scan of the response headers.
"""

from __future__ import annotations

import time
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cache.metrics import Histogram

# Seconds. A hit is tens to hundreds of microseconds in process; a miss runs a query.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_OUTCOME: Final = {b"HIT": "cached", b"STALE": "cached", b"MISS": "uncached"}


class LatencyRecorder:
    def __init__(self) -> None:
        self.by_outcome = {
            "cached": Histogram(LATENCY_BUCKETS),
            "uncached": Histogram(LATENCY_BUCKETS),
        }

    def observe(self, outcome: str, seconds: float) -> None:
        self.by_outcome[outcome].observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        return {name: histogram.snapshot() for name, histogram in self.by_outcome.items()}


class LatencyMiddleware:
    def __init__(self, app: ASGIApp, *, recorder: LatencyRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        outcome: str | None = None

        async def timed(message: Message) -> None:
            nonlocal outcome
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-cache":
                        outcome = _OUTCOME.get(value)
                        break
            await send(message)
            if (
                outcome is not None
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                self.recorder.observe(outcome, time.perf_counter() - started)

        await self.app(scope, receive, timed)
