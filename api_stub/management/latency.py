"""Request latency of the cached routes, per kind, cached vs uncached, measured where the client
sees it.

The caching middleware marks every answer of a cached route ``X-Cache: HIT | STALE | MISS``
and names the kind the route serves in the ASGI scope (``api_stub.caching.KIND_SCOPE``: one
of cache.kinds, such as ``member`` or ``lookup``). This outermost ASGI layer times each request
from its arrival to the last body byte and files it under that kind: HIT and STALE are
"cached", MISS "uncached"; answers without the header (other routes) are not recorded. The
cost is two clock reads, a scan of the response headers and a bucket increment: the
histograms are allocated once, with fixed buckets.

Latency is labelled by kind, not by path template: a kind is the unit the platform declares,
warms, invalidates and charts (one declaration, cache.kinds), its names are few and fixed, and
the caching middleware already holds it when it answers (a hit never reaches the router that
knows the template).

The recorder's :meth:`LatencyRecorder.document` is published with the process's counters
(workers/publisher.py, the API's publisher in api_stub/app.py): cumulative bucket counts since
``started_at``, which the metrics snapshot turns into per-interval quantiles
(tasks/counters.latency_interval).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_stub.caching import KIND_SCOPE
from cache.kinds import KINDS
from cache.metrics import Histogram
from tasks.counters import histogram_of

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
CACHED, UNCACHED = "cached", "uncached"
OUTCOMES: Final = (CACHED, UNCACHED)
_OUTCOME: Final = {b"HIT": CACHED, b"STALE": CACHED, b"MISS": UNCACHED}


class LatencyRecorder:
    """One histogram per kind and outcome, allocated up front for the declared kinds."""

    def __init__(self, kinds: Iterable[str] = KINDS.names) -> None:
        self.started_at = time.time()
        self.by_kind: dict[str, dict[str, Histogram]] = {}
        for kind in kinds:
            self._add(kind)

    def _add(self, kind: str) -> dict[str, Histogram]:
        made = {outcome: Histogram(LATENCY_BUCKETS) for outcome in OUTCOMES}
        self.by_kind[kind] = made
        return made

    def observe(self, kind: str, outcome: str, seconds: float) -> None:
        histograms = self.by_kind.get(kind)
        if histograms is None:  # a kind declared after start-up: once, then preallocated
            histograms = self._add(kind)
        histograms[outcome].observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """Every kind together, cached vs uncached: count, sum, buckets, p50/p95/p99."""
        out: dict[str, Any] = {}
        for outcome in OUTCOMES:
            counts = [0] * (len(LATENCY_BUCKETS) + 1)
            total = 0.0
            for histograms in self.by_kind.values():
                histogram = histograms[outcome]
                total += histogram.total
                for index, count in enumerate(histogram.counts):
                    counts[index] += count
            out[outcome] = histogram_of(LATENCY_BUCKETS, counts, total).snapshot()
        return out

    def by_kind_snapshot(self) -> dict[str, dict[str, Any]]:
        """Per kind that answered, per outcome with requests: count, sum, p50/p95/p99."""
        out: dict[str, dict[str, Any]] = {}
        for kind, histograms in self.by_kind.items():
            row = {
                outcome: {
                    key: value for key, value in histogram.snapshot().items() if key != "buckets"
                }
                for outcome, histogram in histograms.items()
                if histogram.count
            }
            if row:
                out[kind] = row
        return out

    def document(self) -> dict[str, Any]:
        """What the process publishes: cumulative bucket counts since ``started_at`` (one run of
        the recorder), for the kinds and outcomes that saw a request."""
        kinds: dict[str, dict[str, Any]] = {}
        # A copy: the publisher's thread reads while the loop may add a kind (observe()).
        for kind, histograms in tuple(self.by_kind.items()):
            row = {
                outcome: {"counts": list(histogram.counts), "sum": round(histogram.total, 6)}
                for outcome, histogram in histograms.items()
                if histogram.count
            }
            if row:
                kinds[kind] = row
        return {"started_at": self.started_at, "bounds": list(LATENCY_BUCKETS), "kinds": kinds}


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
                kind = scope.get(KIND_SCOPE)
                if kind is not None:
                    self.recorder.observe(kind, outcome, time.perf_counter() - started)

        await self.app(scope, receive, timed)
