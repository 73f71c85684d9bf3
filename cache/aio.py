"""The async front of the cache (the API): service.CacheService for asyncio.

It drives the same flows of the core (cache/flow.py, cache/loading.py) and hands the same
answers to the same decisions on the hot path, with redis.asyncio; only the awaiting differs.
Loaders may be coroutine functions or plain callables.

Reads (GET, MGET) of a standalone server take cache/aiodirect.py, the asyncio counterpart of
cache/direct.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cache import codec, scripts
from cache.aiodirect import DirectAsyncReader
from cache.client import AsyncClients
from cache.codec import Entry
from cache.errors import CorruptEntry
from cache.flow import CacheCore, VersionOf
from cache.loading import Seen
from cache.ops import (
    UNAVAILABLE,
    Fetched,
    Fill,
    Flow,
    Info,
    Load,
    Op,
    Ping,
    Pipeline,
    Read,
    ReadMany,
    ReleaseLease,
    Retire,
    Sleep,
    TakeLease,
    Unlink,
    Write,
    WriteGuarded,
    WriteMany,
)
from cache.service import queue_commands
from cache.types import DataType

log = logging.getLogger("cache")
T = TypeVar("T")
Perform = Callable[[Any], Awaitable[Any]]


class AsyncCacheService:
    def __init__(self, core: CacheCore, clients: AsyncClients) -> None:
        self.core = core
        self.clients = clients
        self.keys = core.keys
        self.metrics = core.metrics
        self.breaker = core.breaker
        self.policy = core.policy  # TTLs per data type (HTTP Cache-Control reads them)
        self._writer = clients.writer
        self._reader = clients.reader
        self._cluster = clients.mode == "cluster"
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
        # Cluster: MGET per slot node, still one round trip per node.
        self._mget: Callable[[list[str]], Awaitable[Any]] = (
            self._direct.mget
            if self._direct
            else getattr(clients.reader, "mget_nonatomic", clients.reader.mget)
        )
        self._mget_primary: Callable[[list[str]], Awaitable[Any]] = getattr(
            clients.writer, "mget_nonatomic", clients.writer.mget
        )
        self._fill = clients.writer.register_script(scripts.FILL)
        self._write_guarded = clients.writer.register_script(scripts.WRITE_GUARDED)
        self._retire = clients.writer.register_script(scripts.RETIRE)
        self._release = clients.writer.register_script(scripts.RELEASE)
        self._redis_ops: dict[type, Perform] = {
            Read: self._read,
            ReadMany: self._read_many,
            Write: self._write,
            WriteGuarded: self._write_guarded_one,
            WriteMany: self._write_many,
            Retire: self._retire_many,
            Unlink: self._unlink,
            TakeLease: self._take_lease,
            ReleaseLease: self._release_lease,
            Fill: self._fill_one,
            Pipeline: self._pipeline,
            Ping: self._ping,
            Info: self._info,
        }
        self._local_ops: dict[type, Perform] = {Load: self._load, Sleep: self._sleep}

    async def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        await self.clients.close()

    @property
    def enabled(self) -> bool:
        """CACHE_ENABLED: when False every read misses and nothing is written."""
        return self.core.enabled

    def snapshot(self) -> dict[str, Any]:
        """Metrics, breaker and outbox state (health, metrics and Prometheus endpoints)."""
        return self.core.snapshot()

    def keep_rendered(self, fetched: Fetched, body: bytes, etag: bytes) -> None:
        """Keep an HTTP body and its ETag beside the near entry that served (or now holds)
        ``fetched``, so the next near hit encodes nothing; charged to the tier's budget."""
        near, node = self.core.near, fetched.node
        if near is not None and node is not None:
            near.attach(node, body, etag)

    @property
    def outbox_pending(self) -> int:
        """Invalidations waiting in the outbox for Redis to come back."""
        return len(self.core.outbox)

    # --- the driver ----------------------------------------------------------------------------
    async def _drive(self, flow: Flow, guarded: bool = True) -> Any:
        """Run a flow to its end. Redis operations go through :meth:`run` (unless ``guarded``
        is False: the outbox replay, already inside it); an operation's exception (the
        loader's, a cancellation, or a Redis error when unguarded) is thrown into the flow."""
        redis_ops, local_ops, run = self._redis_ops, self._local_ops, self.run
        send: Callable[[Any], Op] = flow.send
        result: Any = None
        while True:
            try:
                op = send(result)
            except StopIteration as done:
                return done.value
            try:
                perform = redis_ops.get(type(op))
                if perform is None:
                    result = await local_ops[type(op)](op)
                else:
                    result = await (run(perform, op) if guarded else perform(op))
                send = flow.send
            except BaseException as exc:
                result, send = exc, flow.throw

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T | Any:
        """Run one Redis call behind the core's breaker and outbox replay; UNAVAILABLE on
        failure. Flows use it for every command; other modules for the commands they build
        themselves (pipelines, scans) on this front."""
        core = self.core
        if not core.admit():
            return UNAVAILABLE
        try:
            if len(core.outbox):
                await self._drive(core.replay(), guarded=False)
            result = await fn(*args, **kwargs)
        except RedisError as exc:
            return core.failed(exc)
        core.succeeded()
        return result

    # --- operations: I/O only ------------------------------------------------------------------
    async def _read(self, op: Read) -> Any:
        return await self._get(op.key)

    async def _read_many(self, op: ReadMany) -> Any:
        return await self._mget_primary(op.keys)

    async def _write(self, op: Write) -> Any:
        return await self._writer.set(op.key, op.payload, px=op.px)

    async def _write_guarded_one(self, op: WriteGuarded) -> Any:
        return await self._write_guarded(keys=[op.key, op.lease_key], args=op.args())

    async def _write_many(self, op: WriteMany) -> Any:
        if op.guarded:
            return await self._scripted(self._write_guarded, op.items)
        pipe = self._writer.pipeline(transaction=False)
        for item in op.items:
            pipe.set(item.key, item.payload, px=item.px)
        return await pipe.execute()

    async def _retire_many(self, op: Retire) -> Any:
        return await self._scripted(self._retire, op.items)

    async def _scripted(self, script: Any, items: list[WriteGuarded]) -> Any:
        """One call of a key-and-lease script per item, in one pipeline: the replies."""
        pipe = self._writer.pipeline(transaction=False)
        for item in items:
            # Queued on the pipeline (redis-py accepts pipelines here; its stubs do not say so).
            await script(keys=[item.key, item.lease_key], args=item.args(), client=pipe)
        return await pipe.execute()

    async def _unlink(self, op: Unlink) -> int:
        if self._cluster:
            # Cross-slot UNLINK is not allowed; redis-py splits DEL per slot node.
            return int(await self._writer.delete(*op.keys))
        return int(await self._writer.unlink(*op.keys))

    async def _take_lease(self, op: TakeLease) -> bool:
        return bool(await self._writer.set(op.lease_key, op.token, nx=True, px=op.ms))

    async def _release_lease(self, op: ReleaseLease) -> Any:
        return await self._release(keys=[op.lease_key], args=[op.token])

    async def _fill_one(self, op: Fill) -> Any:
        return await self._fill(
            keys=[op.key, op.lease_key], args=[op.token, op.payload, op.px, op.version]
        )

    async def _pipeline(self, op: Pipeline) -> Any:
        pipe = self._writer.pipeline(transaction=False)
        queue_commands(pipe, op.commands, self._cluster)
        return await pipe.execute()

    async def _ping(self, op: Ping) -> Any:
        return await self._writer.ping()

    async def _info(self, op: Info) -> Any:
        return await self._writer.info(op.section)

    async def _load(self, op: Load) -> Any:
        value = op.loader()
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _sleep(self, op: Sleep) -> None:
        await asyncio.sleep(op.seconds)

    # --- reads ---------------------------------------------------------------------------------
    async def get(self, key: str, data_type: DataType = DataType.DEFAULT) -> Any:
        """The cached value (stale ones included), NOT_FOUND for a cached absence, else MISS."""
        # The hot path: one guarded GET and the core's decision, no flow (CacheCore.read_one).
        core = self.core
        near = core.near_for(data_type)
        if near is None:
            raw = await self.run(self._get, key) if core.enabled else None
            return core.read_one(raw, key, data_type)
        node = near.hit(key)
        if node is not None:
            return core.near_value(node, data_type)
        ticket = near.seq  # before the GET: an invalidation after it refuses the keep
        return core.read_one(await self.run(self._get, key), key, data_type, ticket)

    async def get_many(
        self, keys: Sequence[str], data_type: DataType = DataType.DEFAULT
    ) -> list[Any]:
        """Values in the order of ``keys`` (MISS where absent), in one round trip."""
        core = self.core
        raws = await self.run(self._mget, list(keys)) if keys and core.enabled else None
        return core.read_many(keys, raws, data_type)

    async def entries(self, keys: Sequence[str]) -> list[Entry | None]:
        """The envelopes under ``keys`` in one round trip (None where absent, unreadable, a
        cached absence or retired; all None with Redis away), counted nowhere: for a caller
        that weighs an entry's age itself (api_stub.caching: a lagging kind's earlier value)."""
        raws = await self.run(self._mget, list(keys)) if keys and self.core.enabled else None
        if raws is None or raws is UNAVAILABLE:
            return [None] * len(keys)
        found: list[Entry | None] = []
        for raw in raws:
            try:
                entry = codec.decode(raw) if raw else None
            except CorruptEntry:
                entry = None
            found.append(None if entry is None or entry.not_found or entry.retired else entry)
        return found

    async def fetch(
        self,
        key: str,
        loader: Callable[[], Any],
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
        first: Fetched | Seen | None = None,
    ) -> Fetched:
        """Cache-aside in one read (see cache/loading.py): the value and how it was served
        (HIT, STALE or MISS, and how long it stays fresh, for Cache-Control). ``first``:
        what :meth:`first` read of ``key`` already, so the fetch does not read it again."""
        core = self.core
        if first is None and core.enabled:  # a hit takes one guarded GET and no flow
            first = await self.first(key, data_type)
        if isinstance(first, Fetched):
            return first
        flow = core.fetch(key, loader, data_type, ttl, version_of, first)
        fetched: Fetched = await self._drive(flow)
        return fetched

    async def peek(self, key: str, data_type: DataType = DataType.DEFAULT) -> Fetched | None:
        """What :meth:`fetch` would serve without loading (a fresh entry), else None: the
        entry is missing or stale, or Redis is away. Nothing is counted for a None."""
        if not self.core.enabled:
            return None
        first = await self.first(key, data_type)
        return first if isinstance(first, Fetched) else None

    def count_stale(self, data_type: DataType) -> None:
        """A value served stale by the caller itself (api_stub.caching: within a kind's lag)."""
        self.core.metrics.by_type[data_type].stale += 1

    async def first(self, key: str, data_type: DataType = DataType.DEFAULT) -> Fetched | Seen:
        """A fetch's first read: the near tier, else one guarded GET (loading.first). A
        Fetched is served (and counted); a Seen is what a caller that weighs its options
        before loading passes on to :meth:`fetch` (api_stub.caching: a lagging kind's miss)."""
        core = self.core
        ticket = core.near_first(key, data_type)
        if isinstance(ticket, Fetched):
            return ticket
        return core.fetched(await self.run(self._get, key), key, data_type, ticket)

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
        return (await self.fetch(key, loader, data_type, ttl=ttl, version_of=version_of)).value

    # --- writes --------------------------------------------------------------------------------
    async def set(
        self,
        key: str,
        value: Any,
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version: int = 0,
    ) -> bool:
        return bool(await self._drive(self.core.set(key, value, data_type, ttl, version)))

    async def set_many(
        self,
        items: Mapping[str, Any],
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        versions: Mapping[str, int] | None = None,
        present_only: bool = False,
    ) -> bool:
        """Store many values in one pipelined round trip, each with its own jittered TTL.

        With ``versions`` (key -> source version) each write is version-guarded like
        write_through, so a warm-up that read a row before a newer write cannot undo it;
        with ``present_only`` too, only values still cached are replaced (a refresh).
        """
        flow = self.core.set_many(items, data_type, ttl, versions, present_only)
        return bool(await self._drive(flow))

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
        flow = self.core.write_through(key, value, version, data_type, ttl)
        return bool(await self._drive(flow))

    async def delete(self, *keys: str) -> int:
        """Remove keys (and kill their in-flight fills); queued for replay if Redis is down."""
        return int(await self._drive(self.core.delete(keys)))

    async def invalidate(self, keys: Iterable[str]) -> int:
        return await self.delete(*keys)

    async def generations(self, tags: Sequence[str]) -> tuple[int, ...] | None:
        """The current generation of each tag (see CacheCore.generations); None when down."""
        gens: tuple[int, ...] | None = await self._drive(self.core.generations(tags))
        return gens

    async def bump(self, tags: Iterable[str], *, drop: Collection[str] = ()) -> bool:
        """New generations for ``tags`` and ``drop`` deleted, one round trip (CacheCore.bump)."""
        return bool(await self._drive(self.core.bump(tags, drop)))

    async def ping(self) -> bool:
        return bool(await self._drive(self.core.ping()))

    async def recover(self) -> bool:
        """Outside the breaker: replay the outbox, then PING; success closes the breaker.
        For the process's background loop (cache.invalidation.replay_outbox), which no request
        waits on, so it may try a returning Redis sooner than the breaker lets requests."""
        core = self.core
        try:
            if len(core.outbox):
                await self._drive(core.replay(), guarded=False)
            await self._ping(Ping())
        except RedisError:
            return False  # still away: the requests' breaker says so, once
        core.succeeded()
        return True

    async def info(self, section: str | None = None) -> dict[str, Any] | None:
        """Redis INFO of the writer (the master), or None when Redis is unavailable."""
        answer: dict[str, Any] | None = await self._drive(self.core.info(section))
        return answer
