"""Replays a trace (bench._trace) against a running API, open loop, and records every answer.

Each request is sent at its time in the trace (an asyncio task per request, at most
``MAX_IN_FLIGHT`` in flight: past that the replay falls behind, and the lag is reported, as a
saturated client would).

The client is aiohttp, not httpx: the replay shares 2 cores with the whole platform, and the
client must not be what the latency figures measure. Against a constant-answer uvicorn app
at 120 requests/s with ~60 in flight (half of them answered after ~1 s), httpx's answers took
p50 3.2 / p99 7.7 ms of the client's own time and aiohttp's 0.9 / 1.9 ms; in the replay, after
the failover had pushed the in-flight count up, httpx kept every answer (near-tier hits
included, which the API served in under a millisecond) at 0.5-1 s for 25 s, while a probe on
a connection of its own saw at most 111 ms.

Recorded per request: when it was sent (trace time), the route, the status, the latency
seen by the client and the X-Cache / X-Cache-Tier headers; and the client's own event-loop
lag per second. The incidents (the bulk imports, the master kill, the ``clear``) run at
their times beside the requests; the platform's own figures (write-behind lag, the
consistency monitor) are polled every ``POLL_S`` from the management API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from bench._trace import Request, Trace

MAX_IN_FLIGHT: Final = 128
POLL_S: Final = 1.0
LAG_TICK_S: Final = 0.01  # the client's own event-loop lag is sampled this often
TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Answer:
    at: float  # trace time it was due
    route: str
    status: int  # 0: no answer (a transport error or a timeout)
    latency_s: float
    cache: str  # X-Cache: HIT, MISS, STALE, or "" (not a cached route, or the cache off)
    tier: str  # X-Cache-Tier: near, redis, or ""
    path: str = ""  # the request's path and query: what a cached variant is


@dataclass
class Recording:
    answers: list[Answer] = field(default_factory=list)
    incidents: dict[str, float] = field(default_factory=dict)  # name -> trace time
    polls: list[dict[str, Any]] = field(default_factory=list)  # {"t", "lag_s", ...}
    behind_s: float = 0.0  # the worst lag of the replay behind the trace's schedule
    imports: list[dict[str, Any]] = field(default_factory=list)
    # (trace second, the client's worst event-loop lag in it): a latency the client adds
    # by not running, told apart from the server's.
    loop_lag: list[tuple[int, float]] = field(default_factory=list)


Incident = Callable[[], Awaitable[dict[str, float]]]


async def _send(client: aiohttp.ClientSession, request: Request, out: list[Answer]) -> None:
    headers = {"content-type": request.content_type} if request.body is not None else {}
    started = time.perf_counter()
    try:
        async with client.request(
            request.method, request.path, data=request.body, headers=headers
        ) as answer:
            await answer.read()
            status = answer.status
            cache, tier = answer.headers.get("x-cache", ""), answer.headers.get("x-cache-tier", "")
    except (aiohttp.ClientError, TimeoutError):
        status, cache, tier = 0, "", ""
    out.append(
        Answer(
            request.at,
            request.route,
            status,
            time.perf_counter() - started,
            cache,
            tier,
            request.path,
        )
    )


async def _poll(
    client: aiohttp.ClientSession, token: str, start: float, out: list[dict[str, Any]]
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    while True:
        try:
            async with client.get(
                "/api/v1/cache/metrics", headers=headers, timeout=aiohttp.ClientTimeout(total=5.0)
            ) as answer:
                if answer.status == 200:
                    figures = await answer.json()
                    wb = figures.get("writebehind") or {}
                    out.append(
                        {
                            "t": round(time.monotonic() - start, 2),
                            "lag_s": wb.get("lag_s"),
                            "backlog": wb.get("backlog"),
                            "consistency": figures.get("consistency"),
                        }
                    )
        except (aiohttp.ClientError, TimeoutError, ValueError, RuntimeError):
            pass  # a busy API skips a poll; the client closing ends the replay anyway
        await asyncio.sleep(POLL_S)


async def _sample_loop_lag(start: float, out: list[tuple[int, float]]) -> None:
    second, worst = 0, 0.0
    while True:
        asked = time.monotonic()
        await asyncio.sleep(LAG_TICK_S)
        now = time.monotonic()
        if int(now - start) != second:
            out.append((second, round(worst, 4)))
            second, worst = int(now - start), 0.0
        worst = max(worst, now - asked - LAG_TICK_S)


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
    # The gate holds the trace's requests to MAX_IN_FLIGHT; the imports and the poller come
    # on top, and must not wait for a connection behind them.
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT + 8)
    async with aiohttp.ClientSession(
        base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
    ) as client:
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
        sampler = asyncio.create_task(_sample_loop_lag(start, recording.loop_lag))
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
            sampler.cancel()
        for side_task in (poller, sampler):
            with contextlib.suppress(asyncio.CancelledError):
                await side_task
    return recording
