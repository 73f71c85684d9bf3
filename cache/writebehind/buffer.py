"""The buffer: record, read in order, acknowledge, dead-letter, health (one Redis step each)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis.cluster import RedisCluster
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from cache.client import SyncRedis
from cache.errors import CacheError, CacheUnavailable
from cache.keys import Keys
from cache.writebehind import scripts
from cache.writebehind.config import WriteBehindConfig
from cache.writebehind.errors import Backpressure, InvalidEvent, NotReplicated
from cache.writebehind.events import (
    DAY_MS,
    EPOCH,
    GROUP,
    KINDS,
    ActivityEvent,
    Batch,
    Health,
    day_of,
    entry_fields,
    parse_entries,
    stream_id,
    text,
)
from cache.writebehind.replicas import ReplicaGate

_MS: Final = dt.timedelta(milliseconds=1)
# A record call's token outlives any resend of it (the client resends at once, within its
# socket timeout) and then goes by itself.
CALL_TOKEN_TTL_MS: Final = 10_000
_KEY_MEMO: Final = 100_000  # counter keys remembered: building one costs ~3 µs of checks


# One record script call: the events' indices in the write, its keys and its args.
Call = tuple[list[int], list[str], list[str | int]]


_NOREPLICAS: Final = re.compile(r"(^|caused error: )NOREPLICAS\b")


def redis_error(exc: RedisError) -> CacheError:
    """A redis-py error in the cache's terms: out of memory is Backpressure."""
    if isinstance(exc, OutOfMemoryError):
        return Backpressure(f"redis is out of memory: {exc}")
    # A pipeline's error reads "Command # n (...) of pipeline caused error: NOREPLICAS ...".
    if isinstance(exc, ResponseError) and _NOREPLICAS.search(str(exc)):
        return NotReplicated(f"not recorded: the master has no good replica: {exc}", recorded=False)
    return CacheUnavailable(f"write-behind: {type(exc).__name__}: {exc}")


class WriteBehind:
    """The buffer: record, read in order, acknowledge, dead-letter, health.

    ``streams`` holds one stream a partition, ``deads`` one dead-letter stream a partition,
    each under the partition's hash tag; ``stream`` and ``dead`` are the first (the only ones
    unless ``config.partitions`` > 1). Consumer-side methods take the partition they work on.
    The backlog limit is per partition (``max_backlog`` / partitions): a partition's record
    step reads only its own stream's length.
    """

    def __init__(self, client: SyncRedis, keys: Keys, config: WriteBehindConfig) -> None:
        self.client, self.keys, self.config = client, keys, config
        parts = range(config.partitions)
        self.streams = tuple(keys.writebehind("stream", partition=p) for p in parts)
        self.deads = tuple(keys.writebehind("dead", partition=p) for p in parts)
        self.stream, self.dead = self.streams[0], self.deads[0]
        self.partition_limit = -(-config.max_backlog // config.partitions)
        self.clustered = isinstance(client, RedisCluster)
        self._record = client.register_script(scripts.RECORD)
        self._fetch = client.register_script(scripts.FETCH)
        self._settle = client.register_script(scripts.SETTLE)
        self._replay = client.register_script(scripts.REPLAY)
        self.head: list[str | int] = [self.partition_limit, config.counter_ttl_s * 1000]
        self.replica_gate = ReplicaGate(config.replicas)
        self._days: dict[int, str] = {}
        self._counter_keys: dict[tuple[int, int], str] = {}

    def _day(self, day_no: int) -> str:
        if (value := self._days.get(day_no)) is None:
            value = self._days[day_no] = day_of(day_no).isoformat()
        return value

    def partition_of(self, member_id: int) -> int:
        return member_id % self.config.partitions

    def counter_key(self, member_id: int, day_no: int) -> str:
        key = self._counter_keys.get((member_id, day_no))
        if key is None:
            if len(self._counter_keys) >= _KEY_MEMO:
                self._counter_keys.clear()
            day, partition = self._day(day_no), self.partition_of(member_id)
            key = self.keys.writebehind("day", member_id, day, partition=partition)
            self._counter_keys[(member_id, day_no)] = key
        return key

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise redis_error(exc) from exc

    # --- producers --------------------------------------------------------------------------
    def record(self, events: Sequence[ActivityEvent], *, now: float | None = None) -> list[str]:
        """Count and enqueue the events, one atomic step a partition; their stream ids."""
        parts, keys, args = self.encode(events, time.time() if now is None else now)
        return self.send(parts, keys, args) if keys else []

    def encode(
        self, events: Sequence[ActivityEvent], now: float
    ) -> tuple[list[int], list[str], list[str]]:
        """The events' partitions, counter keys and entries for the record script
        (InvalidEvent)."""
        now_ms = int(now * 1000)
        oldest = now_ms - self.config.max_event_age_s * 1000
        newest = now_ms + self.config.max_future_s * 1000
        parts: list[int] = []
        keys: list[str] = []
        args: list[str] = []
        for event in events:
            member, code, times = event.member_id, KINDS.get(event.kind), event.times
            try:
                at = now_ms if event.at is None else (event.at - EPOCH) // _MS
            except TypeError:
                raise InvalidEvent(f"refused {event!r}: a naive datetime") from None
            if code is None or not oldest <= at <= newest or type(member) is not int:
                raise InvalidEvent(f"refused {event!r}: unknown kind, bad member or time")
            if member <= 0 or type(times) is not int or not 0 < times <= 10_000:
                raise InvalidEvent(f"refused {event!r}: bad member, times must be 1..10000")
            parts.append(member % self.config.partitions)
            keys.append(self.counter_key(member, at // DAY_MS))
            args.append(f"{member},{code},{at},{times}")
        return parts, keys, args

    def calls(self, parts: list[int], keys: list[str], args: list[str]) -> list[Call]:
        """The record script calls of encoded events: one a partition they fall in, each
        with a token of its own (a resent call records nothing twice)."""
        head = [*self.head, CALL_TOKEN_TTL_MS]
        first = parts[0]
        if self.config.partitions == 1 or all(p == first for p in parts):  # the usual case
            every = list(range(len(parts)))
            return [(every, [self.streams[first], *keys, self._token(first)], [*head, *args])]
        by_part: dict[int, Call] = {}
        for index, (part, key, arg) in enumerate(zip(parts, keys, args, strict=True)):
            call = by_part.setdefault(part, ([], [self.streams[part]], [*head]))
            call[0].append(index)
            call[1].append(key)
            call[2].append(arg)
        for part, (_, call_keys, _) in by_part.items():
            call_keys.append(self._token(part))
        return list(by_part.values())

    def _token(self, partition: int) -> str:
        return self.keys.writebehind("call", secrets.token_hex(8), partition=partition)

    def merge(self, calls: list[Call], replies: Sequence[Any]) -> list[str]:
        """The events' ids in the order given, from the replies of their calls; Backpressure
        when a partition refused (the other partitions' events were recorded)."""
        refused = [reply for reply in replies if not reply[0]]
        if refused:
            limit, detail = self.partition_limit, refused[0][1]
            others = (
                " (the events of other partitions were recorded)"
                if len(refused) < len(replies)
                else ""
            )
            per = " a partition" if self.config.partitions > 1 else ""
            raise Backpressure(
                f"write-behind backlog {detail} at its limit of {limit}{per}{others}"
            )
        if len(calls) == 1:
            return self.recorded(replies[0])
        ids = [""] * sum(len(call[0]) for call in calls)
        for (indices, _, _), reply in zip(calls, replies, strict=True):
            for index, entry_id in zip(indices, reply[1], strict=True):
                ids[index] = entry_id.decode()
        return ids

    def send(self, parts: list[int], keys: list[str], args: list[str]) -> list[str]:
        """Run the record script on encoded events, one call a partition (Backpressure past
        a partition's limit); with ``config.replicas``, WAIT for them on the same connection
        (NotReplicated). Several partitions go in one pipeline, on a Cluster one call each."""
        calls = self.calls(parts, keys, args)
        if not self.config.replicas:
            if len(calls) == 1:
                ((_, k, a),) = calls
                return self.merge(calls, [self._call(self._record, keys=k, args=a)])
            if self.clustered:  # a Cluster pipeline cannot load scripts: one call each
                replies = [self._call(self._record, keys=k, args=a) for _, k, a in calls]
                return self.merge(calls, replies)
        if self.replica_gate.due():
            self.replica_gate.update(self._call(self.client.info, "replication"))
        self.replica_gate.check()
        pipe = self.client.pipeline(transaction=False)
        for _, k, a in calls:
            self._record(keys=k, args=a, client=pipe)
        if self.config.replicas:
            pipe.wait(self.config.replicas, self.config.replica_timeout_ms)
        replies = self._call(pipe.execute)
        if not self.config.replicas:
            return self.merge(calls, replies)
        *replies, acked = replies
        return self.replicated(self.merge(calls, replies), acked)

    def replicated(self, ids: list[str], acked: int) -> list[str]:
        """``ids`` when ``acked`` replicas (WAIT's answer) are enough, else NotReplicated."""
        if acked < self.config.replicas:
            raise NotReplicated(
                f"recorded on the master, but confirmed by {acked} of {self.config.replicas}"
                f" replicas within {self.config.replica_timeout_ms} ms: the {len(ids)} events"
                " will be flushed unless the master fails first; a retry may count them twice",
                recorded=True,
            )
        return ids

    def recorded(self, reply: Any) -> list[str]:
        """The ids in the record script's reply, or Backpressure when it refused."""
        ok, detail = reply
        if not ok:
            limit = self.config.max_backlog
            raise Backpressure(f"write-behind backlog {detail} at its limit of {limit}")
        return [entry_id.decode() for entry_id in detail]

    def activity(self, member_id: int, *, now: float | None = None) -> dict[str, Any]:
        """Cached counters of the days an event may still reach, newest first."""
        today = int((time.time() if now is None else now) * 1000) // DAY_MS
        days = range(today, today - self.config.max_event_age_s * 1000 // DAY_MS - 1, -1)
        pipe = self.client.pipeline(transaction=False)  # one slot: one node on a Cluster
        for day_no in days:
            pipe.hgetall(self.counter_key(member_id, day_no))
        rows, seen = [], 0
        for day_no, raw in zip(days, self._call(pipe.execute), strict=True):
            if raw:
                got = {text(k): int(v) for k, v in raw.items()}
                seen = max(seen, got.get("s", 0))
                rows.append(
                    {"day": self._day(day_no)} | {k: got.get(c, 0) for k, c in KINDS.items()}
                )
        last = EPOCH + seen * _MS if seen else None
        return {"member_id": member_id, "days": rows, "last_seen_at": last}

    # --- consumers --------------------------------------------------------------------------
    def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise CacheUnavailable(f"write-behind: {exc}") from exc
            except RedisError as exc:
                raise CacheUnavailable(f"write-behind: {exc}") from exc

    def _fetch_ordered(
        self, partition: int, consumer: str, count: int, idle_ms: int, mode: str, cursor: str = ""
    ) -> Any:
        keys, args = [self.streams[partition]], [GROUP, consumer, count, idle_ms, mode, cursor]
        try:
            source, payload = self._call(self._fetch, keys=keys, args=args)
        except CacheUnavailable as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()  # the stream was lost (a restart without persistence)
            source, payload = self._call(self._fetch, keys=keys, args=args)
        return text(source), payload

    def read_batch(
        self,
        consumer: str,
        max_count: int,
        block_ms: int = 0,
        *,
        min_idle_ms: int | None = None,
        after: str | None = None,
        partition: int = 0,
    ) -> Batch:
        """The next entries of a partition in stream order. Without ``after``, the pending
        prefix first (own, then stale), else new entries. With ``after``, the id of the
        caller's last batch (still in flight), the caller's entries after it, else new ones."""
        idle = self.config.claim_idle_ms if min_idle_ms is None else min_idle_ms
        mode, cursor = ("resume", "") if after is None else ("next", after)
        fetch = (partition, consumer, max_count, idle, mode, cursor)
        source, payload = self._fetch_ordered(*fetch)
        if source == "empty" and block_ms > 0:
            # Wake on the first entry after the last one generated, then fetch in order.
            stream = self.streams[partition]
            self._call(self.client.xread, {stream: payload}, count=1, block=block_ms)
            source, payload = self._fetch_ordered(*fetch)
        if source in ("busy", "empty"):
            return Batch(source, [], [])
        return Batch(source, *parse_entries(payload))

    def claim_stale(
        self, consumer: str, min_idle_ms: int, max_count: int = 1000, *, partition: int = 0
    ) -> Batch:
        """Claim the ordered prefix of pending entries held by consumers idle that long."""
        source, payload = self._fetch_ordered(partition, consumer, max_count, min_idle_ms, "claim")
        if source != "pending":
            return Batch(source, [], [])
        return Batch(source, *parse_entries(payload))

    def ack(self, ids: Sequence[str], *, partition: int = 0) -> None:
        """Acknowledge flushed entries and trim them from the stream (also out of memory)."""
        self._settle_ids(partition, ids, "")

    def dead_letter(self, ids: Sequence[str], error: str, *, partition: int = 0) -> None:
        """Move entries to the dead-letter stream with the error, acknowledging them."""
        self._settle_ids(partition, ids, error[:500] or "unwritable")

    def _settle_ids(self, partition: int, ids: Sequence[str], error: str) -> None:
        if ids:
            newest = max(ids, key=stream_id)
            keys = [self.streams[partition], self.deads[partition]]
            self._call(self._settle, keys=keys, args=[GROUP, newest, error, *ids])

    def dead_letters(self, count: int = 100, after: str = "-") -> list[dict[str, str]]:
        """Dead-lettered entries of every partition, oldest first: dead-letter id and fields."""
        pipe = self.client.pipeline(transaction=False)
        for dead in self.deads:
            pipe.xrange(dead, after, "+", count)
        raw = sorted(
            (entry for entries in self._call(pipe.execute) for entry in entries),
            key=lambda entry: stream_id(text(entry[0])),
        )[:count]
        return [
            {"dead_id": text(i)} | entry_fields({text(k): text(v) for k, v in f.items()})
            for i, f in raw
        ]

    def replay(self, dead_ids: Sequence[str]) -> list[str]:
        """Re-queue dead-lettered events (the cache counted them already) to the stream of
        the partition that dead-lettered them; their new ids."""
        if not dead_ids:
            return []
        out: list[str] = []
        for dead, stream in zip(self.deads, self.streams, strict=True):
            ids = self._call(self._replay, keys=[dead, stream], args=list(dead_ids))
            out.extend(text(i) for i in ids)
        return out

    def discard(self, dead_ids: Sequence[str]) -> int:
        if not dead_ids:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for dead in self.deads:
            pipe.xdel(dead, *dead_ids)
        return sum(int(n) for n in self._call(pipe.execute))

    def health(self) -> Health:
        """Backlog and pending summed over the partitions; lag of the oldest entry of any."""
        pipe = self.client.pipeline(transaction=False)
        # A Cluster pipeline takes keyed commands only: there TIME is a call of its own.
        clock = self._call(self.client.time) if self.clustered else None
        if clock is None:
            pipe.time()
        for dead_stream in self.deads:
            pipe.xlen(dead_stream)
        for stream in self.streams:
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", 1)
            pipe.xpending(stream, GROUP)
        replies = self._call(pipe.execute, raise_on_error=False)
        if clock is None:
            clock, replies = replies[0], replies[1:]
        head = len(self.deads)  # the dead-letter lengths, then three replies a partition
        for index, reply in enumerate(replies):
            if isinstance(reply, Exception) and (index < head or (index - head) % 3 != 2):
                raise CacheUnavailable(f"write-behind: {reply}") from reply
        sec, usec = clock
        dead = sum(int(n) for n in replies[:head])
        backlog = pending = 0
        lag = 0.0
        for length, oldest, group in zip(*[iter(replies[head:])] * 3, strict=True):
            backlog += int(length)
            if oldest:
                age = sec + usec / 1e6 - stream_id(text(oldest[0][0]))[0] / 1000
                lag = max(lag, age)
            if not isinstance(group, Exception):  # no group yet: nothing pending
                pending += int(group["pending"])
        return Health(backlog, pending, lag, int(dead), self.config.max_backlog)
