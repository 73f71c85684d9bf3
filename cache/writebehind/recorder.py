"""Group commit of ``record``: concurrent callers (threads, asyncio tasks) share a script call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from cache.client import AsyncRedis
from cache.errors import CacheUnavailable
from cache.writebehind import scripts
from cache.writebehind.buffer import Call, WriteBehind, redis_error
from cache.writebehind.errors import KeyReused
from cache.writebehind.events import ActivityEvent, text


class _Waiter:
    """One caller's events, and its ids or error once the group is sent. ``done`` is held
    until then: a bare lock wakes a thread with less work than a Future's condition."""

    __slots__ = ("args", "done", "error", "ids", "keys", "parts")

    def __init__(self, parts: list[int], keys: list[str], args: list[str]) -> None:
        self.parts, self.keys, self.args = parts, keys, args
        self.ids: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()


class GroupRecorder:
    """``record`` for many threads: concurrent calls share one script call (group commit).

    Flat combining, no thread of its own: a caller that finds a send slot free sends its
    events at once; callers arriving meanwhile queue theirs and wait, and a sender, before it
    leaves, sends everything queued (up to ``max_events`` a round trip) and hands each caller
    its own ids. Up to ``max_inflight`` groups are in flight at once, each on its own pooled
    connection, so the next group is built while Redis runs the last one. A lone caller pays
    nothing; concurrent callers share round trips, which, not Redis, cap a client. A refused
    group (Backpressure, Redis down) fails each caller in it.
    """

    def __init__(self, wb: WriteBehind, max_events: int = 1_000, max_inflight: int = 1) -> None:
        self.wb, self.max_events = wb, max_events
        self._queue: deque[_Waiter] = deque()
        self._slots = threading.BoundedSemaphore(max_inflight)

    def record(self, events: Sequence[ActivityEvent]) -> list[str]:
        parts, keys, args = self.wb.encode(events, time.time())
        if not keys:
            return []
        mine = _Waiter(parts, keys, args)
        self._queue.append(mine)
        while self._slots.acquire(blocking=False):
            try:
                while self._queue:
                    self._send_group()
            finally:
                self._slots.release()
            if not self._queue:  # else a caller queued after the last look: send it too
                break
        mine.done.acquire()
        if mine.error is not None:
            raise mine.error
        return mine.ids

    def _send_group(self) -> None:
        group: list[_Waiter] = []
        size = 0
        try:
            while size < self.max_events:
                group.append(waiter := self._queue.popleft())
                size += len(waiter.keys)
        except IndexError:  # drained
            pass
        if not group:
            return
        parts = [part for waiter in group for part in waiter.parts]
        keys = [key for waiter in group for key in waiter.keys]
        args = [arg for waiter in group for arg in waiter.args]
        try:
            ids = self.wb.send(parts, keys, args)
        except Exception as exc:  # each caller of the group gets it; none waits forever
            for waiter in group:
                waiter.error = exc
                waiter.done.release()
            return
        start = 0
        for waiter in group:
            waiter.ids = ids[start : start + len(waiter.keys)]
            start += len(waiter.keys)
            waiter.done.release()


_Pending = tuple[list[int], list[str], list[str], "asyncio.Future[list[str]]"]


@dataclass(frozen=True, slots=True)
class Once:
    """What ``record_once`` did: the events' stream ids, and whether they were recorded by an
    earlier request with the same key (``replayed``: nothing was recorded now)."""

    ids: list[str]
    replayed: bool


class AsyncGroupRecorder:
    """``record`` for asyncio callers (the API): concurrent calls share one script call.

    A caller queues its events and awaits its ids. A sender task takes everything queued
    when it runs (up to ``max_events``) as one group and, once that group is answered, the
    next, until nothing is left. A caller that finds no sender about to run starts one, as
    long as fewer than ``max_inflight`` groups are in flight: a group that waits on Redis
    holds back neither the requests behind it nor the event loop, so a Redis slow to be
    scheduled (a loaded host) costs one round trip a request, not two. A coroutine switch
    costs far less than a thread's wake-up, so groups grow with the number of requests in
    flight. ``client`` is the asyncio client of the same Redis (one pooled connection a
    group in flight).
    """

    def __init__(
        self, wb: WriteBehind, client: AsyncRedis, max_events: int = 1_000, max_inflight: int = 4
    ) -> None:
        self.wb, self.max_events, self.max_inflight = wb, max_events, max_inflight
        self._client = client
        self._script = client.register_script(scripts.RECORD)
        self._once = client.register_script(scripts.RECORD_ONCE)
        self._queue: deque[_Pending] = deque()
        self._senders: set[asyncio.Task[None]] = set()  # each with a group in flight, or next
        self._next: asyncio.Task[None] | None = None  # the sender about to take the queue

    async def record(self, events: Sequence[ActivityEvent]) -> list[str]:
        parts, keys, args = self.wb.encode(events, time.time())
        if not keys:
            return []
        mine: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append((parts, keys, args, mine))
        if self._next is None and len(self._senders) < self.max_inflight:
            self._next = sender = asyncio.create_task(self._send_all())
            self._senders.add(sender)
            sender.add_done_callback(self._ended)
        return await mine

    async def _send_all(self) -> None:
        me, self._next = asyncio.current_task(), None
        try:
            while self._queue:
                group, size = [], 0
                while self._queue and size < self.max_events:
                    group.append(item := self._queue.popleft())
                    size += len(item[1])
                await self._send_group(group)
        finally:
            # Gone before the loop runs anything else: a caller queuing next starts a sender.
            self._senders.discard(me)
            if self._queue:  # cancelled: no caller may wait forever
                self._fail(list(self._queue), CacheUnavailable("write-behind: send cancelled"))
                self._queue.clear()

    def _ended(self, sender: asyncio.Task[None]) -> None:
        """A sender cancelled before it ran: the queue must not wait for it."""
        self._senders.discard(sender)
        if self._next is sender:
            self._next = None
            if self._queue:
                self._fail(list(self._queue), CacheUnavailable("write-behind: send cancelled"))
                self._queue.clear()

    async def _send_group(self, group: list[_Pending]) -> None:
        if len(group) == 1:
            parts, keys, args, _ = group[0]
        else:
            parts = [part for item in group for part in item[0]]
            keys = [key for item in group for key in item[1]]
            args = [arg for item in group for arg in item[2]]
        try:
            ids = await self._send(self.wb.calls(parts, keys, args))
        except RedisError as exc:
            self._fail(group, redis_error(exc), exc)
            return
        except Exception as exc:  # each caller of the group gets it; none waits forever
            self._fail(group, exc)
            return
        except BaseException:
            self._fail(group, CacheUnavailable("write-behind: send cancelled"))
            raise
        start = 0
        for _, item_keys, _, future in group:
            if not future.done():  # a caller that gave up (cancelled) is skipped
                future.set_result(ids[start : start + len(item_keys)])
            start += len(item_keys)

    async def record_once(
        self, events: Sequence[ActivityEvent], digest: str, fingerprint: str, window_ms: int
    ) -> Once:
        """Record ``events`` (one member's: one partition) unless the idempotency key
        ``digest`` already recorded a request within ``window_ms``: then replay its ids, or
        raise KeyReused when that request's ``fingerprint`` differs. One script call of its
        own (not grouped: its reply is its own), so the check, the record and the key's write
        are one atomic step on the partition's hash tag."""
        parts, keys, args = self.wb.encode(events, time.time())
        part = parts[0]
        if any(other != part for other in parts):
            raise ValueError("record_once takes the events of one partition")
        once = self.wb.keys.writebehind("once", digest, partition=part)
        all_keys = [self.wb.streams[part], *keys, once]
        all_args: list[str | int] = [*self.wb.head, window_ms, fingerprint, *args]
        try:
            reply, acked = await self._call_once(all_keys, all_args)
        except RedisError as exc:
            raise redis_error(exc) from exc
        if int(reply[0]) == 2:
            if text(reply[1]) != fingerprint:
                raise KeyReused("this Idempotency-Key was used for a different request")
            held = text(reply[2])
            ids = held.split(",") if held else []
            return Once(self.wb.replicated(ids, acked) if acked is not None else ids, True)
        ids = self.wb.merge([([0], all_keys, all_args)], [reply])
        return Once(self.wb.replicated(ids, acked) if acked is not None else ids, False)

    async def _call_once(self, keys: list[str], args: list[str | int]) -> tuple[Any, Any]:
        """(the script's reply, how many replicas confirmed it: None when none are required);
        with replicas required, WAIT on the same connection after it."""
        replicas = self.wb.config.replicas
        if not replicas:
            return await self._once(keys=keys, args=args), None
        gate = self.wb.replica_gate
        if gate.due():
            gate.update(await self._client.info("replication"))
        gate.check()
        pipe = self._client.pipeline(transaction=False)
        # A Script given a pipeline queues EVALSHA there (redis-py's types omit pipelines).
        await self._once(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
        pipe.wait(replicas, self.wb.config.replica_timeout_ms)
        reply, acked = await pipe.execute()
        return reply, acked

    async def _send(self, calls: list[Call]) -> list[str]:
        """One record call a partition; with replicas required, WAIT on the same connection
        after them. Several partitions go in one pipeline, on a Cluster one call each."""
        replicas, wb = self.wb.config.replicas, self.wb
        if not replicas:
            if len(calls) == 1:
                ((_, keys, args),) = calls
                return wb.merge(calls, [await self._script(keys=keys, args=args)])
            if wb.clustered:  # a Cluster pipeline cannot load scripts: one call each
                return wb.merge(calls, [await self._script(keys=k, args=a) for _, k, a in calls])
        gate = wb.replica_gate  # one view of the master's replicas per buffer
        if gate.due():
            gate.update(await self._client.info("replication"))
        gate.check()
        pipe = self._client.pipeline(transaction=False)
        for _, keys, args in calls:
            # A Script given a pipeline queues EVALSHA there (redis-py's types omit pipelines).
            await self._script(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
        if replicas:
            pipe.wait(replicas, wb.config.replica_timeout_ms)
        replies = await pipe.execute()
        if not replicas:
            return wb.merge(calls, replies)
        *replies, acked = replies
        return wb.replicated(wb.merge(calls, replies), acked)

    @staticmethod
    def _fail(group: list[_Pending], error: Exception, cause: Exception | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        for *_, future in group:
            if not future.done():
                future.set_exception(error)
