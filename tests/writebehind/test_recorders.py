"""AsyncGroupRecorder on the real Redis: concurrent requests share script calls, each gets its
own ids, a refused group fails each caller in it; entries of either form parse and replay."""

from __future__ import annotations

import asyncio

import pytest

from cache import CacheService
from cache.client import connect_async
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
    Backpressure,
    InvalidEvent,
    WriteBehind,
    WriteBehindConfig,
    stream_id,
)
from config import Settings

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_share_calls_and_keep_their_ids(
    wb: WriteBehind, settings: Settings
) -> None:
    clients = connect_async(settings)
    recorder = AsyncGroupRecorder(wb, clients.writer)
    sends = 0
    script = recorder._script

    async def counting(**kw: object) -> object:
        nonlocal sends
        sends += 1
        return await script(**kw)  # type: ignore[arg-type]

    recorder._script = counting  # type: ignore[assignment]

    async def caller(n: int) -> list[list[str]]:
        got = []
        for _ in range(20):
            got.append(await recorder.record([ActivityEvent(1 + n, "login")]))
        return got

    try:
        results = await asyncio.gather(*(caller(n) for n in range(50)))
        with pytest.raises(InvalidEvent):
            await recorder.record([ActivityEvent(1, "nonsense")])
    finally:
        await clients.close()
    ids = [i for per_caller in results for got in per_caller for i in got]
    assert len(ids) == len(set(ids)) == 1000 == wb.client.xlen(wb.stream)
    assert sends <= 100  # 1,000 requests, about one call per round of the 50 callers
    assert {wb.activity(1 + n)["days"][0]["login"] for n in range(50)} == {20}


async def test_groups_waiting_on_redis_hold_back_no_request_up_to_max_inflight(
    wb: WriteBehind, settings: Settings
) -> None:
    """A group whose reply is late (a Redis slow to be scheduled) does not hold the next
    requests back: they go as another group, up to ``max_inflight`` groups in flight."""
    clients = connect_async(settings)
    recorder = AsyncGroupRecorder(wb, clients.writer, max_inflight=2)
    script, held, release = recorder._script, [], asyncio.Event()

    async def late(**kw: object) -> object:
        held.append(kw)
        await release.wait()
        return await script(**kw)  # type: ignore[arg-type]

    recorder._script = late  # type: ignore[assignment]

    async def sent(count: int) -> None:
        while len(held) < count:
            await asyncio.sleep(0.001)

    try:
        first = asyncio.create_task(recorder.record([ActivityEvent(1, "login")]))
        await asyncio.wait_for(sent(1), 5)
        second = asyncio.create_task(recorder.record([ActivityEvent(2, "login")]))
        await asyncio.wait_for(sent(2), 5)  # sent while the first is still unanswered
        third = asyncio.create_task(recorder.record([ActivityEvent(3, "checkin")]))
        await asyncio.sleep(0.05)
        assert len(held) == 2 and not third.done()  # two in flight: the third queues
        release.set()
        ids = [await asyncio.wait_for(task, 5) for task in (first, second, third)]
    finally:
        await clients.close()
    assert len(held) == 3
    stored = [entry_id.decode() for entry_id, _ in wb.client.xrange(wb.stream)]
    assert sorted((i for got in ids for i in got), key=stream_id) == stored
    assert wb.activity(3)["days"][0]["checkin"] == 1


async def test_a_refused_group_fails_each_caller_in_it(
    cache: CacheService, settings: Settings
) -> None:
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig(max_backlog=3))
    clients = connect_async(settings)
    recorder = AsyncGroupRecorder(wb, clients.writer)
    try:
        assert len(await recorder.record([ActivityEvent(1, "login")] * 3)) == 3
        outcomes = await asyncio.gather(
            *(recorder.record([ActivityEvent(1, "login")]) for _ in range(5)),
            return_exceptions=True,
        )
    finally:
        await clients.close()
    assert all(isinstance(o, Backpressure) for o in outcomes)


def test_a_four_field_entry_still_flushes_and_replays(wb: WriteBehind) -> None:
    old = wb.client.xadd(wb.stream, {"m": 9, "k": "p", "t": 1_750_000_000_000, "n": 2})
    batch = wb.read_batch("a", 10)
    assert [(e.member_id, e.code, e.at_ms, e.times) for e in batch.events] == [
        (9, "p", 1_750_000_000_000, 2)
    ]
    wb.dead_letter([old.decode()], "test")
    (dead,) = wb.dead_letters()
    assert (dead["m"], dead["k"], dead["n"]) == ("9", "p", "2")
    (new_id,) = wb.replay([dead["dead_id"]])
    (again,) = wb.read_batch("a", 10).events
    assert (again.id, again.member_id, again.times) == (new_id, 9, 2)
