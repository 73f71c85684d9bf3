"""The client-side caches of bench.hotpath: the project's near tier and its two peers.

- the project: ``CacheService.get`` over a core whose near tier is kept live by its tracker
  (cache/tracking.py), as ``Services.open`` runs it;
- redis-py's own client-side cache: ``Redis(protocol=3, cache_config=CacheConfig())`` (sync,
  default tracking mode, invalidations read on the same RESP3 connection);
- cashews ``client_side=True`` (BCAST on a prefix, invalidations through a pub/sub listener
  task of its asyncio loop).

Each one is set up, checked to serve from memory and to drop an entry another client wrote,
and returned with a close function for the bench's ExitStack.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from typing import Any

import redis
from cashews import Cache as CashewsCache
from redis.cache import CacheConfig

from cache import CacheService, DataType, build_cache
from cache.tracking import Tracker, tracker_for
from config import Settings

NEAR_TARGET = 50.0  # a near hit >= 50x a redis-py GET


class NearSetupError(RuntimeError):
    pass


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NearSetupError(message)


def near_service(settings: Settings) -> tuple[CacheService, Tracker]:
    """A sync front whose near tier is live (its tracker started and subscribed)."""
    service = build_cache(settings)
    near = service.core.near
    _require(near is not None, "the near tier is off for these settings")
    assert near is not None
    tracker = tracker_for(near, service.keys.tracked(near.types), service.clients.writer)
    assert tracker is not None
    tracker.start()
    _require(tracker.wait_connected(5), "the near tier's tracking connection did not come up")
    return service, tracker


def check_near(service: CacheService, key: str, record: Any, floor: redis.Redis) -> None:
    near = service.core.near
    assert near is not None
    _require(service.get(key, DataType.MEMBER) == record, "near: the record is not readable")
    _require(service.get(key, DataType.MEMBER) == record, "near: the record is not readable")
    hits = near.counters.hits
    _require(service.get(key, DataType.MEMBER) == record, "near: missed")
    _require(near.counters.hits == hits + 1, "near: the record was not served from memory")


def redispy_csc_supported(server_version: str) -> bool:
    """redis-py enables its client-side cache only against Redis >= 7.4."""
    parts = [int(part) for part in server_version.split(".")[:2] if part.isdigit()]
    return len(parts) == 2 and (parts[0], parts[1]) >= (7, 4)


def redispy_csc(host: str, port: int, db: int, password: str | None) -> redis.Redis:
    """redis-py's client-side cache (RESP3, default tracking), one connection."""
    return redis.Redis(
        host=host,
        port=port,
        db=db,
        password=password,
        protocol=3,
        cache_config=CacheConfig(),
        single_connection_client=True,
    )


def check_invalidated(read: Callable[[], Any], write: Callable[[], Any], new: Any) -> None:
    """After another client's write, ``read`` answers the new value within a second."""
    write()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if read() == new:
            return
        time.sleep(0.001)
    raise NearSetupError("a client-side cache kept serving a replaced value")


class CashewsClientSide:
    """cashews with ``client_side=True`` in its own loop, under ``prefix``.

    ``protocol=2``: cashews reads its invalidations as RESP2 pub/sub messages; over RESP3 (the
    default of redis-py >= 8) Redis sends them as pushes its listener never sees, and entries
    are never invalidated (measured: stale forever). The bench gives it the protocol it needs.
    """

    def __init__(self, url: str, prefix: str, protocol: int = 2) -> None:
        self.runner = asyncio.Runner()
        self.cache = CashewsCache(name="bench-near")
        self.backend = self.cache.setup(
            url, client_side=True, client_side_prefix=prefix, protocol=protocol
        )
        self.runner.run(self.cache.init())

    def set(self, key: str, value: Any, expire: int) -> None:
        async def go() -> None:
            await self.cache.set(key, value, expire=expire)

        self.runner.run(go())

    def get(self, key: str, *, yield_first: bool = False) -> Any:
        async def go() -> Any:
            if yield_first:
                await asyncio.sleep(0)
            return await self.cache.get(key)

        return self.runner.run(go())

    def loop(self, key: str) -> Callable[[int], float]:
        cache = self.cache

        async def many(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                await cache.get(key)
            return time.perf_counter() - started

        def batch(n: int) -> float:
            return self.runner.run(many(n))

        return batch

    def close(self) -> None:
        async def go() -> None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
                await self.cache.close()

        try:
            self.runner.run(go())
        finally:
            self.runner.close()
