"""The cache's decisions, written once for the sync and the async front.

Every operation of the cache is a generator here: it yields operations (cache/ops.py: read a
key, write an envelope, run a pipeline, take a lease, load...) and receives their results;
the one-command reads of the hot path (get, get_many, a fetch's first read) are plain
decisions on the answer instead (:meth:`CacheCore.read_one`, ``read_many``, ``fetched``). The
sync front (service.py) calls redis-py and the async front (aio.py) awaits redis.asyncio; both
only perform what a flow asks, so they behave identically, and a test drives a flow without
Redis (tests/cache/test_flow.py). A Redis failure comes back as ``UNAVAILABLE``: reads then
miss, writes are skipped, invalidations wait in the outbox (fail-open).

What runs around every command is decided here too: :meth:`CacheCore.admit` (the breaker),
:meth:`CacheCore.replay` (pending invalidations first), :meth:`CacheCore.failed` and
:meth:`CacheCore.succeeded`. The single-flight fetch (lease, early refresh, stale serving,
version guard) is in cache/loading.py, the tag generations in cache/generations.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cache import codec, generations, loading
from cache.breaker import CircuitBreaker
from cache.errors import CorruptEntry
from cache.keys import Keys
from cache.metrics import CacheMetrics, TypeCounters
from cache.near import NearCache, NearNode, near_types, off_reason
from cache.ops import (
    UNAVAILABLE,
    Fetched,
    Fill,
    Flow,
    Info,
    Load,
    Op,
    Outcome,
    Ping,
    Read,
    ReleaseLease,
    Retire,
    Sleep,
    TakeLease,
    Unlink,
    Write,
    WriteGuarded,
    WriteMany,
)
from cache.outbox import MemoryOutbox, Outbox
from cache.ttl import TtlPolicy, should_refresh_early
from cache.types import MISS, NOT_FOUND, DataType, Sentinel

log = logging.getLogger("cache")

# How long a retired envelope (a failed write-through, replayed) keeps older writes out.
RETIRED_MS: Final = 60_000

VersionOf = Callable[[Any], int]


@dataclass
class CacheCore:
    """Configuration, state and decisions shared by both fronts; no I/O here.

    The clocks and the random draw are fields so that a test can drive time: ``clock`` is wall
    time (envelopes), ``monotonic`` bounds the wait on another caller's lease, ``timer`` times
    loads, ``rand`` draws XFetch's early refresh.
    """

    keys: Keys
    policy: TtlPolicy
    metrics: CacheMetrics
    breaker: CircuitBreaker
    outbox: Outbox
    enabled: bool = True
    compress_threshold: int = 4096
    lease_ms: int = 5000
    xfetch_beta: float = 1.0
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    timer: Callable[[], float] = time.perf_counter
    rand: Callable[[], float] = random.random
    # The near tier (cache/near.py), None when off; it serves only while a tracker
    # (cache/tracking.py, started by services.Services) keeps it live.
    near: NearCache | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, with_near: bool = True) -> CacheCore:
        """``with_near=False``: no near tier in this process, whatever the settings."""
        metrics = CacheMetrics()
        reason = off_reason(settings) if with_near else "not asked for by this process"
        wanted = settings.cache_near_enabled and settings.cache_enabled
        if with_near and reason is not None and wanted:
            log.info("near cache off: %s", reason)
        near = (
            NearCache(settings.cache_near_max_bytes, near_types(), metrics.near)
            if reason is None
            else None
        )
        return cls(
            keys=Keys(settings.redis_key_prefix),
            policy=TtlPolicy.from_settings(settings),
            metrics=metrics,
            near=near,
            breaker=CircuitBreaker(
                settings.cache_breaker_failures, settings.cache_breaker_reset_seconds
            ),
            outbox=MemoryOutbox(),
            enabled=settings.cache_enabled,
            compress_threshold=settings.cache_compress_threshold,
            lease_ms=settings.cache_lease_ms,
            xfetch_beta=settings.cache_xfetch_beta,
        )

    def snapshot(self) -> dict[str, Any]:
        """Metrics plus breaker and outbox state, for health and metrics endpoints."""
        return self.metrics.snapshot() | {
            "breaker": {
                "state": self.breaker.state.value,
                "times_opened": self.breaker.times_opened,
            },
            "outbox_pending": len(self.outbox),
        }

    # --- around every command ----------------------------------------------------------------
    def admit(self) -> bool:
        """May a command go to Redis? Not while the breaker is open (then it is counted)."""
        if self.breaker.allow():
            return True
        self.metrics.breaker_skips += 1
        return False

    def failed(self, exc: Exception) -> Sentinel:
        """A command failed: tell the breaker; the caller gets UNAVAILABLE, never the error."""
        self.breaker.failure()
        log.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
        return UNAVAILABLE

    def succeeded(self) -> None:
        self.breaker.success()

    def replay(self) -> Flow:
        """Invalidations that failed while Redis was away, applied before the next command.

        Oldest first, in batches: deletes as an UNLINK (with the leases), failed write-throughs
        as retired envelopes at their version (:meth:`retirement`). A batch stays counted in the
        outbox until its commands are done (another replay meanwhile skips it). A batch that
        fails goes back to the outbox and the failure propagates, so the command it preceded
        is not run against stale data. The front performs these operations directly, outside
        the breaker it is already inside.
        """
        while pending := self.outbox.take():
            deleted = [key for key, version in pending if version is None]
            retired = [self.retirement(key, v) for key, v in pending if v is not None]
            try:
                if deleted:
                    yield Unlink(self.with_leases(deleted))
                if retired:
                    yield Retire(retired)
            except BaseException:
                self.outbox.settle(pending, applied=False)
                raise
            self.outbox.settle(pending, applied=True)
            self.metrics.outbox_replayed += len(pending)

    def retirement(self, key: str, version: int) -> WriteGuarded:
        """The retired envelope that replays a write-through of ``version`` that failed: a
        miss for readers, kept RETIRED_MS, longer than any write or fill still on its way
        (a lease lasts ``lease_ms``; a command, the pool's wait and its socket timeout)."""
        payload = codec.encode_retired(created_at=self.clock(), version=version)
        return WriteGuarded(key, self.keys.lease(key), payload, RETIRED_MS, version)

    def with_leases(self, keys: Iterable[str]) -> list[str]:
        """The keys and their leases: deleting a lease makes an in-flight fill fail."""
        keys = list(keys)
        return [*keys, *(self.keys.lease(key) for key in keys)]

    # --- envelopes ---------------------------------------------------------------------------
    def decode(self, raw: bytes, counters: TypeCounters, key: str) -> codec.Entry | None:
        """An entry, or None for bytes that are not ours (logged and counted, never raised)
        and for a retired key (no value: a plain miss)."""
        try:
            entry = codec.decode(raw)
        except CorruptEntry as exc:
            counters.errors += 1
            log.warning("cache entry %s unreadable, treated as a miss: %s", key, exc)
            return None
        return None if entry.retired else entry

    def envelope(
        self,
        value: Any,
        data_type: DataType,
        *,
        ttl: float | None = None,
        compute_time: float = 0.0,
        version: int = 0,
    ) -> tuple[bytes, int]:
        """(payload, hard TTL in ms) for a value; NOT_FOUND gets the short negative TTL."""
        payload, px, _soft = self.envelope_soft(value, data_type, ttl, compute_time, version)
        return payload, px

    def envelopes(
        self, values: Sequence[Any], data_type: DataType, versions: Sequence[int]
    ) -> list[tuple[bytes, int]]:
        """:meth:`envelope` for many values computed together (never NOT_FOUND): one clock
        read and the TTL draws in one go, for bulk writes of thousands."""
        if any(value is NOT_FOUND for value in values):
            raise ValueError("NOT_FOUND has an envelope of its own: envelope()")
        now = self.clock()
        expiries = self.policy.expiries(data_type, len(values))
        payloads = codec.encode_many(
            values,
            versions,
            created_at=now,
            soft_expires_at=[now + soft for soft, _ in expiries],
            compress_threshold=self.compress_threshold,
        )
        return [(payload, hard) for payload, (_, hard) in zip(payloads, expiries, strict=True)]

    def envelope_soft(
        self,
        value: Any,
        data_type: DataType,
        ttl: float | None = None,
        compute_time: float = 0.0,
        version: int = 0,
    ) -> tuple[bytes, int, float]:
        """:meth:`envelope` plus the soft TTL in seconds (how long the value stays fresh)."""
        now = self.clock()
        if value is NOT_FOUND:
            expiry = self.policy.negative()
            payload = codec.encode_not_found(
                created_at=now, soft_expires_at=now + expiry.soft_seconds, version=version
            )
            return payload, expiry.hard_ms, expiry.soft_seconds
        expiry = self.policy.expiry(data_type, ttl)
        payload = codec.encode(
            value,
            created_at=now,
            soft_expires_at=now + expiry.soft_seconds,
            compute_time=compute_time,
            version=version,
            compress_threshold=self.compress_threshold,
        )
        return payload, expiry.hard_ms, expiry.soft_seconds

    def read_one(self, raw: Any, key: str, data_type: DataType, ticket: int = -1) -> Any:
        """get(): what Redis answered for ``key`` (bytes, None when absent or not asked, or
        UNAVAILABLE) means: the value (stale ones included), NOT_FOUND, or MISS; counted.
        ``ticket``: the near tier's ticket taken before the GET (:meth:`near_for`), -1 when
        the near tier is not asked; a fresh entry is then kept there.

        get and get_many are the hot path (bench.hotpath), so they are no flow: the front
        performs its one GET (MGET) behind :meth:`admit` and hands the answer here.
        """
        counters = self.metrics.by_type[data_type]
        if raw is None or raw is UNAVAILABLE:
            counters.misses += 1
            return MISS
        entry = self.decode(raw, counters, key)
        if entry is None:
            counters.misses += 1
            return MISS
        now = self.clock()
        self.count_served(entry, counters, now)
        if ticket >= 0 and now < entry.soft_expires_at and self.near is not None:
            self.near.keep(key, entry, ticket)
        return NOT_FOUND if entry.not_found else entry.value

    # --- the near tier -----------------------------------------------------------------------
    def near_for(self, data_type: DataType) -> NearCache | None:
        """The near tier when it holds ``data_type`` (and the cache is on), else None."""
        near = self.near
        # live_until is 0 until a tracker subscribes (and after it stops): a front without
        # one (a test's, a bench's) reads Redis exactly as without the tier.
        if near is None or not near.live_until or not self.enabled or data_type not in near.types:
            return None
        return near

    def near_value(self, node: NearNode, data_type: DataType) -> Any:
        """get(): a near hit's value, counted as a hit of its data type."""
        entry = node.entry
        counters = self.metrics.by_type[data_type]
        if entry.not_found:
            counters.negative_hits += 1
            return NOT_FOUND
        counters.hits += 1
        return entry.value

    def near_fetched(self, node: NearNode, data_type: DataType) -> Fetched:
        """fetch(): a near hit, served as a HIT from the near tier."""
        value = self.near_value(node, data_type)
        left = node.entry.soft_expires_at - self.clock()
        return Fetched(value, Outcome.HIT, max(left, 0.0), "near", node)

    def near_first(self, key: str, data_type: DataType) -> Fetched | int:
        """A fetch's first step, before its GET: the near hit, else the near tier's ticket
        to take before the GET (see cache/near.py; -1: no near tier for the data type)."""
        near = self.near_for(data_type)
        if near is None:
            return -1
        node = near.hit(key)
        if node is not None:
            return self.near_fetched(node, data_type)
        return near.seq

    def recent_members(
        self, limit: int, wanted: Callable[[str], bool] = lambda _key: True
    ) -> list[int]:
        """Up to ``limit`` ids of the member records the near tier holds whose key is
        ``wanted``, the most recently read first (none without a near tier)."""
        if self.near is None or limit <= 0:
            return []
        of = self.keys.member_id_of
        found = (of(key) for key in self.near.recent() if wanted(key))
        return list(itertools.islice((i for i in found if i is not None), limit))

    def near_drop(self, keys: Iterable[str]) -> None:
        """Own writes: the near tier forgets the keys before the write is sent."""
        if self.near is not None:
            self.near.drop(keys)

    def read_many(self, keys: Sequence[str], raws: Any, data_type: DataType) -> list[Any]:
        """get_many(): :meth:`read_one` for an MGET's answer (None when not asked)."""
        counters = self.metrics.by_type[data_type]
        if raws is None or raws is UNAVAILABLE:
            counters.misses += len(keys)
            return [MISS] * len(keys)
        now, out = self.clock(), []
        for key, raw in zip(keys, raws, strict=True):
            entry = None if raw is None else self.decode(raw, counters, key)
            if entry is None:
                counters.misses += 1
                out.append(MISS)
            else:
                self.count_served(entry, counters, now)
                out.append(NOT_FOUND if entry.not_found else entry.value)
        return out

    def written(self, stored: Any, counters: TypeCounters, count: int = 1) -> bool:
        """Count the outcome of a write: True stored, False refused, UNAVAILABLE skipped."""
        if stored is UNAVAILABLE:
            counters.skipped_writes += count
            return False
        if stored is False or stored == 0:
            counters.writes_rejected += count
            return False
        counters.writes += count
        return True

    def written_each(self, results: Sequence[Any], counters: TypeCounters) -> bool:
        """Count per-key outcomes of a guarded batch; True when every key was stored."""
        stored = sum(1 for result in results if result == 1)
        counters.writes += stored
        counters.writes_rejected += len(results) - stored
        return stored == len(results)

    @staticmethod
    def present(entry: codec.Entry) -> Any:
        return NOT_FOUND if entry.not_found else entry.value

    def count_served(self, entry: codec.Entry, counters: TypeCounters, now: float) -> None:
        if entry.not_found:
            counters.negative_hits += 1
        elif now >= entry.soft_expires_at:
            counters.stale += 1
        else:
            counters.hits += 1

    def refresh_early(self, entry: codec.Entry, now: float) -> bool:
        return should_refresh_early(
            now, entry.soft_expires_at, entry.compute_time, self.xfetch_beta, 1.0 - self.rand()
        )

    @staticmethod
    def new_token() -> str:
        return os.urandom(12).hex()

    # --- cache-aside (cache/loading.py) ------------------------------------------------------
    def fetch(
        self,
        key: str,
        loader: Callable[[], Any],
        data_type: DataType,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
        seen: loading.Seen | None = None,
    ) -> Flow:
        """Cache-aside with single flight; returns a :class:`Fetched` (see cache/loading.py).

        ``seen``: what the front's own first read found (:meth:`fetched`), when it made one.
        """
        return loading.fetch(self, key, loader, data_type, ttl, version_of, seen)

    # The first read of a fetch, decided without a flow: a plain hit is served there (a plain
    # function, so the hit path pays no extra call).
    fetched = loading.first

    # --- writes ------------------------------------------------------------------------------
    def set(
        self, key: str, value: Any, data_type: DataType, ttl: float | None, version: int
    ) -> Flow:
        counters = self.metrics.by_type[data_type]
        if not self.enabled:
            counters.skipped_writes += 1
            return False
        payload, px = self.envelope(value, data_type, ttl=ttl, version=version)
        self.near_drop([key])
        return self.written((yield Write(key, payload, px)), counters)

    def set_many(
        self,
        items: Mapping[str, Any],
        data_type: DataType,
        ttl: float | None,
        versions: Mapping[str, int] | None,
        present_only: bool = False,
    ) -> Flow:
        """Many values in one pipelined round trip, each with its own jittered TTL; with
        ``versions`` each write is version-guarded like write_through, and with
        ``present_only`` stores only over a value still cached (scripts.WRITE_GUARDED)."""
        counters = self.metrics.by_type[data_type]
        if not items:
            return True
        if not self.enabled:
            counters.skipped_writes += len(items)
            return False
        guarded = versions is not None
        writes = []
        for key, value in items.items():
            version = versions.get(key, 0) if versions is not None else 0
            payload, px = self.envelope(value, data_type, ttl=ttl, version=version)
            lease_key = self.keys.lease(key) if guarded else ""
            writes.append(WriteGuarded(key, lease_key, payload, px, version, present_only))
        self.near_drop(items)
        stored = yield WriteMany(writes, guarded)
        if stored is UNAVAILABLE or not guarded:
            return self.written(stored, counters, len(items))
        return self.written_each(stored, counters)

    def write_through(
        self, key: str, value: Any, version: int, data_type: DataType, ttl: float | None
    ) -> Flow:
        """Store a value just committed to the source unless a newer version is cached; when
        Redis is unavailable the key waits in the outbox, so the old value cannot outlive the
        outage."""
        counters = self.metrics.by_type[data_type]
        if not self.enabled:
            counters.skipped_writes += 1
            return False
        payload, px = self.envelope(value, data_type, ttl=ttl, version=version)
        near = self.near if self.near is not None and data_type in self.near.types else None
        if near is not None:  # the old value is never served from here once this is sent
            near.drop([key])
        ticket = near.seq if near is not None else -1
        stored = yield WriteGuarded(key, self.keys.lease(key), payload, px, version)
        if stored is UNAVAILABLE:
            self.outbox.add([key], {key: version})
        elif near is not None and stored == 1:
            # Read-your-writes in process: what Redis accepted, unless a later write's push
            # (or a flush) was handled meanwhile; never over a newer version.
            near.keep(key, codec.decode(payload), ticket)
        return self.written(stored, counters)

    def delete(self, keys: Sequence[str]) -> Flow:
        """Remove keys and their leases (in-flight fills then fail); queued if Redis is down."""
        if not keys or not self.enabled:
            return 0
        self.near_drop(keys)
        removed = yield Unlink(self.with_leases(keys))
        if removed is UNAVAILABLE:
            self.outbox.add(keys)
            return 0
        return int(removed)

    # --- generations (cache/generations.py) -----------------------------------------------------
    def generations(self, tags: Sequence[str]) -> Flow:
        """The current generation of each tag; None when Redis is unavailable."""
        return generations.read(self, tags)

    def bump(self, tags: Iterable[str], drop: Collection[str]) -> Flow:
        """New generations of ``tags``, ``drop`` deleted; queued in the outbox when down."""
        return generations.bump(self, tags, drop)

    # --- server ------------------------------------------------------------------------------
    def ping(self) -> Flow:
        return (yield Ping()) is True

    def info(self, section: str | None) -> Flow:
        """Redis INFO of the master, or None when Redis is unavailable."""
        answer = yield Info(section)
        return None if answer is UNAVAILABLE else dict(answer)


__all__ = [
    "MISS",
    "NOT_FOUND",
    "UNAVAILABLE",
    "CacheCore",
    "Fetched",
    "Fill",
    "Flow",
    "Load",
    "MemoryOutbox",
    "Op",
    "Outcome",
    "Read",
    "ReleaseLease",
    "Sleep",
    "TakeLease",
    "VersionOf",
]
