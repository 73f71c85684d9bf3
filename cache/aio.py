"""The async front of the cache (the API): the same operations as service.CacheService.

It runs the same flows (flow.CacheCore) with redis.asyncio; only the awaiting differs. Loaders
may be coroutine functions or plain callables.

Reads (GET, MGET) of a standalone server take cache/aiodirect.py, the asyncio counterpart of
cache/direct.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cache import scripts
from cache.aiodirect import DirectAsyncReader
from cache.client import AsyncClients
from cache.flow import (
    UNAVAILABLE,
    CacheCore,
    Fill,
    Flow,
    Load,
    Read,
    ReleaseLease,
    Sleep,
    TakeLease,
    VersionOf,
)
from cache.types import MISS, DataType

log = logging.getLogger("cache")
T = TypeVar("T")


class AsyncCacheService:
    def __init__(self, core: CacheCore, clients: AsyncClients) -> None:
        self.core = core
        self.clients = clients
        self.keys = core.keys
        self.metrics = core.metrics
        self.breaker = core.breaker
        self._writer = clients.writer
        self._reader = clients.reader
        self._direct: DirectAsyncReader | None = None
        if (
            clients.mode == "standalone"
            and isinstance(clients.reader, aioredis.Redis)
            and DirectAsyncReader.supports(clients.reader.connection_pool)
        ):
            self._direct = DirectAsyncReader(clients.reader.connection_pool)
        self._get: Callable[[str], Awaitable[Any]] = (
            self._direct.get if self._direct else clients.reader.get
        )
        self._fill = clients.writer.register_script(scripts.FILL)
        self._write_guarded = clients.writer.register_script(scripts.WRITE_GUARDED)
        self._release = clients.writer.register_script(scripts.RELEASE)
        self._replaying = False

    async def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        await self.clients.close()

    # --- plumbing -------------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T | Any:
        if not self.breaker.allow():
            self.metrics.breaker_skips += 1
            return UNAVAILABLE
        try:
            if len(self.core.outbox) and not self._replaying:
                await self._replay_outbox()
            result = await fn(*args, **kwargs)
        except RedisError as exc:
            self.breaker.failure()
            log.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
            return UNAVAILABLE
        self.breaker.success()
        return result

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T | Any:
        """Run one Redis call through the breaker and the outbox replay; UNAVAILABLE on failure.

        For modules that build their own commands (pipelines, generations) on this front.
        """
        return await self._call(fn, *args, **kwargs)

    async def _replay_outbox(self) -> None:
        """Apply invalidations that failed while Redis was away, before serving anything."""
        self._replaying = True
        try:
            while keys := self.core.outbox.drain():
                try:
                    await self._unlink(keys)
                except RedisError:
                    self.core.outbox.restore(keys)
                    raise
                self.metrics.outbox_replayed += len(keys)
        finally:
            self._replaying = False

    async def _unlink(self, keys: Sequence[str]) -> int:
        leases = [self.keys.lease(key) for key in keys]
        if self.clients.mode == "cluster":
            # Cross-slot UNLINK is not allowed; redis-py splits the keys per slot node.
            return int(await self._writer.delete(*keys, *leases))
        return int(await self._writer.unlink(*keys, *leases))

    async def _run(self, flow: Flow, loader: Callable[[], Any], data_type: DataType) -> Any:
        result: Any = None
        while True:
            try:
                op = flow.send(result)
            except StopIteration as done:
                return done.value
            if isinstance(op, Read):
                result = await self._call(self._get, op.key)
            elif isinstance(op, TakeLease):
                taken = await self._call(
                    self._writer.set, op.lease_key, op.token, nx=True, px=op.ms
                )
                result = UNAVAILABLE if taken is UNAVAILABLE else bool(taken)
            elif isinstance(op, Load):
                try:
                    result = await self._timed_load(loader, data_type)
                except BaseException as exc:
                    await self._abort(flow, exc)
                    raise
            elif isinstance(op, Fill):
                stored = await self._call(
                    self._fill,
                    keys=[op.key, op.lease_key],
                    args=[op.token, op.payload, op.px, op.version],
                )
                result = UNAVAILABLE if stored is UNAVAILABLE else stored == 1
            elif isinstance(op, Sleep):
                await asyncio.sleep(op.seconds)
                result = None
            elif isinstance(op, ReleaseLease):
                result = await self._call(self._release, keys=[op.lease_key], args=[op.token])

    async def _abort(self, flow: Flow, exc: BaseException) -> None:
        """The loader failed: let the flow release its lease, then end it."""
        try:
            op = flow.throw(exc)
        except BaseException:
            return
        if isinstance(op, ReleaseLease):
            await self._call(self._release, keys=[op.lease_key], args=[op.token])
        flow.close()

    async def _timed_load(
        self, loader: Callable[[], Any], data_type: DataType
    ) -> tuple[Any, float]:
        counters = self.metrics.of(data_type)
        started = time.perf_counter()
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
        except BaseException:
            counters.load_errors += 1
            raise
        seconds = time.perf_counter() - started
        counters.loads += 1
        counters.load_seconds.observe(seconds)
        return value, seconds

    # --- reads ----------------------------------------------------------------------------------
    async def get(self, key: str, data_type: DataType = DataType.DEFAULT) -> Any:
        """The cached value (stale ones included), NOT_FOUND for a cached absence, else MISS."""
        counters = self.metrics.by_type[data_type]
        if not self.core.enabled:
            counters.misses += 1
            return MISS
        raw = await self._call(self._get, key)
        return self.core.read_one(raw, counters, key)

    async def get_raw(self, key: str) -> Any:
        """The stored bytes of ``key`` (None when absent), or UNAVAILABLE; nothing decoded.

        For callers that read the envelope themselves (the API's cached routes).
        """
        return await self._call(self._get, key)

    async def get_many(
        self, keys: Sequence[str], data_type: DataType = DataType.DEFAULT
    ) -> list[Any]:
        """Values in the order of ``keys`` (MISS where absent), in one round trip."""
        counters = self.metrics.by_type[data_type]
        if not keys:
            return []
        if not self.core.enabled:
            counters.misses += len(keys)
            return [MISS] * len(keys)
        # Cluster: MGET per slot node, still one round trip per node.
        mget = (
            self._direct.mget
            if self._direct
            else getattr(self._reader, "mget_nonatomic", self._reader.mget)
        )
        raws = await self._call(mget, list(keys))
        return self.core.read_many(keys, raws, counters)

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Any],
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
    ) -> Any:
        """Cache-aside. ``loader`` returns the value, or NOT_FOUND to cache an absence briefly."""
        if not self.core.enabled:
            self.metrics.by_type[data_type].misses += 1
            return (await self._timed_load(loader, data_type))[0]
        return await self._run(
            self.core.get_or_load(key, data_type, ttl, version_of), loader, data_type
        )

    # --- writes ---------------------------------------------------------------------------------
    async def set(
        self,
        key: str,
        value: Any,
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version: int = 0,
    ) -> bool:
        counters = self.metrics.by_type[data_type]
        if not self.core.enabled:
            counters.skipped_writes += 1
            return False
        payload, px = self.core.envelope(value, data_type, ttl=ttl, version=version)
        stored = await self._call(self._writer.set, key, payload, px=px)
        return self.core.written(stored, counters)

    async def set_many(
        self,
        items: Mapping[str, Any],
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> bool:
        """Store many values in one pipelined round trip, each with its own jittered TTL.

        With ``versions`` (key -> source version) each write is version-guarded like
        write_through, so a warm-up that read a row before a newer write cannot undo it.
        """
        counters = self.metrics.by_type[data_type]
        if not self.core.enabled or not items:
            counters.skipped_writes += len(items) if not self.core.enabled else 0
            return not items
        pipe = self._writer.pipeline(transaction=False)
        for key, value in items.items():
            version = versions.get(key, 0) if versions is not None else 0
            payload, px = self.core.envelope(value, data_type, ttl=ttl, version=version)
            if versions is None:
                pipe.set(key, payload, px=px)
            else:
                # Queued on the pipeline (redis-py accepts pipelines here; its stubs do not say so).
                await self._write_guarded(
                    keys=[key, self.keys.lease(key)],
                    args=[payload, px, version],
                    client=pipe,  # type: ignore[arg-type]
                )
        stored = await self._call(pipe.execute)
        if stored is UNAVAILABLE or versions is None:
            return self.core.written(stored, counters, len(items))
        return self.core.written_each(stored, counters)

    async def write_through(
        self,
        key: str,
        value: Any,
        version: int,
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
    ) -> bool:
        """Store a value just committed to the source, unless a newer version is cached.

        Returns True when stored. When Redis is unavailable the key is queued for
        invalidation instead, so an old cached value cannot outlive the outage.
        """
        counters = self.metrics.by_type[data_type]
        if not self.core.enabled:
            counters.skipped_writes += 1
            return False
        payload, px = self.core.envelope(value, data_type, ttl=ttl, version=version)
        stored = await self._call(
            self._write_guarded, keys=[key, self.keys.lease(key)], args=[payload, px, version]
        )
        if stored is UNAVAILABLE:
            self.core.outbox.add([key])
        return self.core.written(stored, counters)

    async def delete(self, *keys: str) -> int:
        """Remove keys (and kill their in-flight fills); queued for replay if Redis is down."""
        if not keys or not self.core.enabled:
            return 0
        removed = await self._call(self._unlink, list(keys))
        if removed is UNAVAILABLE:
            self.core.outbox.add(keys)
            return 0
        return int(removed)

    async def invalidate(self, keys: Iterable[str]) -> int:
        return await self.delete(*keys)

    async def ping(self) -> bool:
        return await self._call(self._writer.ping) is True

    async def info(self, section: str | None = None) -> dict[str, Any] | None:
        """Redis INFO of the writer (the master), or None when Redis is unavailable."""
        answer = await self._call(self._writer.info, section)
        return None if answer is UNAVAILABLE else dict(answer)
