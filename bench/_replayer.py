"""Replays a trace (bench._trace) against a running API, open loop, and records every answer.

Each request is sent at its time in the trace (an asyncio task per request, at most
``MAX_IN_FLIGHT`` in flight: past that the replay falls behind, and the lag is reported, as a
saturated client would). Recorded per request: when it was sent (trace time), the route, the
status, the latency seen by the client and the X-Cache / X-Cache-Tier headers. The incidents
(the bulk imports, the master kill, the ``clear``) run at their times beside the requests;
the platform's own figures (write-behind lag, the consistency monitor) are polled every
``POLL_S`` from the management API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from bench._trace import Request, Trace

MAX_IN_FLIGHT: Final = 128
POLL_S: Final = 1.0
TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Answer:
    at: float  # trace time it was due
    route: str
    status: int  # 0: no answer (a transport error or a timeout)
    latency_s: float
    cache: str  # X-Cache: HIT, MISS, STALE, or "" (not a cached route, or the cache off)
    tier: str  # X-Cache-Tier: near, redis, or ""


@dataclass
class Recording:
    answers: list[Answer] = field(default_factory=list)
    incidents: dict[str, float] = field(default_factory=dict)  # name -> trace time
    polls: list[dict[str, Any]] = field(default_factory=list)  # {"t", "lag_s", ...}
    behind_s: float = 0.0  # the worst lag of the replay behind the trace's schedule
    imports: list[dict[str, Any]] = field(default_factory=list)


Incident = Callable[[], Awaitable[dict[str, float]]]


async def _send(client: httpx.AsyncClient, request: Request, out: list[Answer]) -> None:
    headers = {"content-type": request.content_type} if request.body is not None else {}
    started = time.perf_counter()
    try:
        answer = await client.request(
            request.method, request.path, content=request.body, headers=headers
        )
        status = answer.status_code
        cache, tier = answer.headers.get("x-cache", ""), answer.headers.get("x-cache-tier", "")
    except httpx.HTTPError:
        status, cache, tier = 0, "", ""
    out.append(
        Answer(request.at, request.route, status, time.perf_counter() - started, cache, tier)
    )


async def _poll(
    client: httpx.AsyncClient, token: str, start: float, out: list[dict[str, Any]]
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    while True:
        try:
            answer = await client.get("/api/v1/cache/metrics", headers=headers, timeout=5.0)
            if answer.status_code == 200:
                figures = answer.json()
                wb = figures.get("writebehind") or {}
                out.append(
                    {
                        "t": round(time.monotonic() - start, 2),
                        "lag_s": wb.get("lag_s"),
                        "backlog": wb.get("backlog"),
                        "consistency": figures.get("consistency"),
                    }
                )
        except (httpx.HTTPError, ValueError, RuntimeError):
            pass  # a busy API skips a poll; the client closing ends the replay anyway
        await asyncio.sleep(POLL_S)


async def replay(
    base_url: str,
    trace: Trace,
    token: str,
    incidents: dict[str, tuple[float, Incident]],
    progress: Callable[[float], None] = lambda _: None,
) -> Recording:
    """Replay ``trace``; ``incidents`` name -> (trace time, coroutine) run beside it, each
    returning the times (trace seconds) of the moments it wants reported."""
    recording = Recording()
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S, limits=limits) as client:
        start = time.monotonic()
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        pending: set[asyncio.Task[None]] = set()

        async def gated(request: Request) -> None:
            async with gate:
                await _send(client, request, recording.answers)

        async def incident(name: str, at: float, run: Incident) -> None:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
            recording.incidents[name] = round(time.monotonic() - start, 3)
            for moment, when in (await run()).items():
                recording.incidents[moment] = round(when - start, 3)

        async def bulk(request: Request) -> None:
            await asyncio.sleep(max(0.0, request.at - (time.monotonic() - start)))
            sent = time.perf_counter()
            found: list[Answer] = []
            await _send(client, request, found)
            recording.answers.extend(found)
            recording.imports.append(
                {"at": request.at, "status": found[0].status, "seconds": time.perf_counter() - sent}
            )

        side = [
            asyncio.create_task(incident(name, at, run)) for name, (at, run) in incidents.items()
        ]
        side += [asyncio.create_task(bulk(request)) for request in trace.imports]
        poller = asyncio.create_task(_poll(client, token, start, recording.polls))
        for index, request in enumerate(trace.requests):
            delay = request.at - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                recording.behind_s = max(recording.behind_s, -delay)
            task = asyncio.create_task(gated(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if index % 200 == 0:
                progress(min(request.at, trace.duration))
        await asyncio.sleep(max(0.0, trace.duration - (time.monotonic() - start)))
        progress(trace.duration)
        try:
            await asyncio.gather(*pending, *side)
        finally:
            poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    return recording
