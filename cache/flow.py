"""The cache's decisions, shared by the sync and the async front.

``get_or_load`` is written once, as a generator that yields I/O operations (read a key, take a
lease, load, fill, sleep) and receives their results. The sync front (service.py) and the async
front (aio.py) only execute those operations, so both behave identically and the logic can be
driven by a test without Redis. A Redis failure comes back as ``UNAVAILABLE``; the flow then
serves from the loader (fail-open).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cache import codec
from cache.breaker import CircuitBreaker
from cache.errors import CorruptEntry
from cache.keys import Keys
from cache.metrics import CacheMetrics, TypeCounters
from cache.outbox import MemoryOutbox, Outbox
from cache.ttl import TtlPolicy, should_refresh_early
from cache.types import MISS, NOT_FOUND, DataType, Sentinel

log = logging.getLogger("cache")

# Sent back by a front when Redis could not run an operation (error, timeout, breaker open).
UNAVAILABLE: Final = Sentinel("UNAVAILABLE")

VersionOf = Callable[[Any], int]


# --- Operations a flow yields ------------------------------------------------------------------
@dataclass(slots=True)
class Read:
    key: str


@dataclass(slots=True)
class TakeLease:
    lease_key: str
    token: str
    ms: int


@dataclass(slots=True)
class ReleaseLease:
    lease_key: str
    token: str


@dataclass(slots=True)
class Load:
    """Call the loader; the front answers (value, seconds it took)."""


@dataclass(slots=True)
class Fill:
    key: str
    lease_key: str
    token: str
    payload: bytes
    px: int
    version: int


@dataclass(slots=True)
class Sleep:
    seconds: float


Op = Read | TakeLease | ReleaseLease | Load | Fill | Sleep
Flow = Generator[Op, Any, Any]


@dataclass
class CacheCore:
    """Configuration and state shared by both fronts; no I/O here."""

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

    @classmethod
    def from_settings(cls, settings: Any) -> CacheCore:
        return cls(
            keys=Keys(settings.redis_key_prefix),
            policy=TtlPolicy.from_settings(settings),
            metrics=CacheMetrics(),
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

    # --- envelopes ---------------------------------------------------------------------------
    def decode(self, raw: bytes, counters: TypeCounters, key: str) -> codec.Entry | None:
        """An entry, or None for bytes that are not ours (logged and counted, never raised)."""
        try:
            return codec.decode(raw)
        except CorruptEntry as exc:
            counters.errors += 1
            log.warning("cache entry %s unreadable, treated as a miss: %s", key, exc)
            return None

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
        now = self.clock()
        if value is NOT_FOUND:
            expiry = self.policy.negative()
            payload = codec.encode_not_found(
                created_at=now, soft_expires_at=now + expiry.soft_seconds, version=version
            )
            return payload, expiry.hard_ms
        expiry = self.policy.expiry(data_type, ttl)
        payload = codec.encode(
            value,
            created_at=now,
            soft_expires_at=now + expiry.soft_seconds,
            compute_time=compute_time,
            version=version,
            compress_threshold=self.compress_threshold,
        )
        return payload, expiry.hard_ms

    def read_one(self, raw: Any, counters: TypeCounters, key: str) -> Any:
        """What get() returns for the bytes Redis answered (None, UNAVAILABLE or an envelope)."""
        if raw is None or raw is UNAVAILABLE:
            counters.misses += 1
            return MISS
        entry = self.decode(raw, counters, key)
        if entry is None:
            counters.misses += 1
            return MISS
        self.count_served(entry, counters, self.clock())
        return self.present(entry)

    def read_many(self, keys: Sequence[str], raws: Any, counters: TypeCounters) -> list[Any]:
        if raws is UNAVAILABLE:
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
            now, entry.soft_expires_at, entry.compute_time, self.xfetch_beta, 1.0 - random.random()
        )

    @staticmethod
    def new_token() -> str:
        return os.urandom(12).hex()

    # --- get_or_load ---------------------------------------------------------------------------
    def get_or_load(
        self,
        key: str,
        data_type: DataType,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
    ) -> Flow:
        """Cache-aside with single-flight leases, stale serving and early refresh."""
        counters = self.metrics.of(data_type)
        raw = yield Read(key)
        if raw is UNAVAILABLE:
            return (yield Load())[0]
        now = self.clock()
        entry = None if raw is None else self.decode(raw, counters, key)
        lease_key, token = self.keys.lease(key), self.new_token()

        if entry is not None:
            fresh = now < entry.soft_expires_at
            if fresh and not self.refresh_early(entry, now):
                self.count_served(entry, counters, now)
                return self.present(entry)
            # Stale, or drawn for an early refresh: one caller refreshes, the rest are served.
            if (yield TakeLease(lease_key, token, self.lease_ms)) is not True:
                self.count_served(entry, counters, now)
                return self.present(entry)
            if (
                newer := (
                    yield from self._filled_meanwhile(
                        key, lease_key, token, counters, entry.created_at
                    )
                )
            ) is not None:
                return self.present(newer)
            if fresh:
                counters.early_refreshes += 1
            else:
                counters.misses += 1
            return (
                yield from self._load_and_fill(
                    key, lease_key, token, data_type, ttl, version_of, counters
                )
            )

        counters.misses += 1
        taken = yield TakeLease(lease_key, token, self.lease_ms)
        if taken is True:
            if (
                newer := (yield from self._filled_meanwhile(key, lease_key, token, counters, 0.0))
            ) is not None:
                return self.present(newer)
            return (
                yield from self._load_and_fill(
                    key, lease_key, token, data_type, ttl, version_of, counters
                )
            )
        if taken is UNAVAILABLE:
            return (yield Load())[0]

        # Another caller holds the lease and is loading: wait for its value.
        counters.lease_waits += 1
        deadline = time.monotonic() + self.lease_ms / 1000
        delay = 0.002
        while time.monotonic() < deadline:
            yield Sleep(delay)
            raw = yield Read(key)
            if raw is UNAVAILABLE:
                break
            if raw is not None and (entry := self.decode(raw, counters, key)) is not None:
                return self.present(entry)
            delay = min(delay * 2, 0.05)

        # The lease holder is late or gone: load ourselves; fill only if the lease is ours now.
        if (yield TakeLease(lease_key, token, self.lease_ms)) is True:
            return (
                yield from self._load_and_fill(
                    key, lease_key, token, data_type, ttl, version_of, counters
                )
            )
        return (yield Load())[0]

    def _filled_meanwhile(
        self, key: str, lease_key: str, token: str, counters: TypeCounters, seen_created: float
    ) -> Flow:
        """After taking the lease, read again: another caller may have filled the key between
        our read and our lease (its fill frees the lease). Then its value is served."""
        raw = yield Read(key)
        if raw is None or raw is UNAVAILABLE:
            return None
        entry = self.decode(raw, counters, key)
        if entry is None or entry.created_at <= seen_created or entry.is_stale(self.clock()):
            return None
        yield ReleaseLease(lease_key, token)
        self.count_served(entry, counters, self.clock())
        return entry

    def _load_and_fill(
        self,
        key: str,
        lease_key: str,
        token: str,
        data_type: DataType,
        ttl: float | None,
        version_of: VersionOf | None,
        counters: TypeCounters,
    ) -> Flow:
        try:
            value, seconds = yield Load()
        except BaseException:
            yield ReleaseLease(lease_key, token)
            raise
        version = version_of(value) if version_of is not None and value is not NOT_FOUND else 0
        payload, px = self.envelope(
            value, data_type, ttl=ttl, compute_time=seconds, version=version
        )
        stored = yield Fill(key, lease_key, token, payload, px, version)
        if stored is True:
            counters.writes += 1
        elif stored is UNAVAILABLE:
            counters.skipped_writes += 1
        else:
            counters.writes_rejected += 1
        return value


__all__ = [
    "MISS",
    "NOT_FOUND",
    "UNAVAILABLE",
    "CacheCore",
    "Fill",
    "Flow",
    "Load",
    "MemoryOutbox",
    "Op",
    "Read",
    "ReleaseLease",
    "Sleep",
    "TakeLease",
]
