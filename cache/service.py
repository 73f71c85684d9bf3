"""The sync front of the cache (Celery workers, cachectl): performs, decides nothing.

Each public method drives one flow of the core (cache/flow.py) with :meth:`CacheService._drive`:
every Redis operation the flow yields goes through :meth:`CacheService.run` (the core's
breaker check, then its outbox replay, then the command; a Redis error becomes
``UNAVAILABLE``, never an exception) and is performed by one small method per operation.
The hot path is the exception: get, get_many and a fetch's first read make their one command
through :meth:`run` and hand the answer to the core's decision (CacheCore.read_one,
read_many, fetched), since a generator per hit costs more than the decision itself.
aio.py is the same front for asyncio, awaiting where this one calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisError

from cache import scripts
from cache.client import SyncClients
from cache.direct import DirectReader
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
from cache.types import DataType

log = logging.getLogger("cache")
T = TypeVar("T")


def queue_commands(pipe: Any, commands: Sequence[tuple[Any, ...]], cluster: bool) -> None:
    """Queue plain commands on a pipeline of either front (queueing never does I/O)."""
    for command in commands:
        if cluster and command[0] == "UNLINK":
            for key in command[1:]:  # no cross-slot UNLINK on Cluster; one per key
                pipe.execute_command("UNLINK", key)
        else:
            pipe.execute_command(*command)


class CacheService:
    def __init__(self, core: CacheCore, clients: SyncClients) -> None:
        self.core = core
        self.clients = clients
        self.keys = core.keys
        self.metrics = core.metrics
        self.breaker = core.breaker
        self.policy = core.policy  # TTLs per data type (HTTP Cache-Control reads them)
        self._writer = clients.writer
        self._reader = clients.reader
        self._cluster = clients.mode == "cluster"
        # Standalone reads take the direct path (cache/direct.py); other modes need the client's
        # routing (Sentinel discovery, Cluster slots).
        self._direct: DirectReader | None = None
        if clients.mode == "standalone" and isinstance(clients.reader, redis.Redis):
            self._direct = DirectReader(clients.reader.connection_pool)
        self._get: Callable[[str], Any] = self._direct.get if self._direct else clients.reader.get
        # Cluster: MGET per slot node, still one round trip per node.
        self._mget: Callable[[list[str]], Any] = (
            self._direct.mget
            if self._direct
            else getattr(clients.reader, "mget_nonatomic", clients.reader.mget)
        )
        self._mget_primary: Callable[[list[str]], Any] = getattr(
            clients.writer, "mget_nonatomic", clients.writer.mget
        )
        self._fill = clients.writer.register_script(scripts.FILL)
        self._write_guarded = clients.writer.register_script(scripts.WRITE_GUARDED)
        self._retire = clients.writer.register_script(scripts.RETIRE)
        self._release = clients.writer.register_script(scripts.RELEASE)
        self._redis_ops: dict[type, Callable[[Any], Any]] = {
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
        self._local_ops: dict[type, Callable[[Any], Any]] = {Load: self._load, Sleep: self._sleep}

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self.clients.close()

    @property
    def enabled(self) -> bool:
        """CACHE_ENABLED: when False every read misses and nothing is written."""
        return self.core.enabled

    def snapshot(self) -> dict[str, Any]:
        """Metrics, breaker and outbox state (health, metrics and Prometheus endpoints)."""
        return self.core.snapshot()

    @property
    def outbox_pending(self) -> int:
        """Invalidations waiting in the outbox for Redis to come back."""
        return len(self.core.outbox)

    # --- the driver ----------------------------------------------------------------------------
    def _drive(self, flow: Flow, guarded: bool = True) -> Any:
        """Run a flow to its end. Redis operations go through :meth:`run` (unless ``guarded``
        is False: the outbox replay, already inside it); an operation's exception (the
        loader's, or a Redis error when unguarded) is thrown into the flow."""
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
                    result = local_ops[type(op)](op)
                else:
                    result = run(perform, op) if guarded else perform(op)
                send = flow.send
            except BaseException as exc:
                result, send = exc, flow.throw

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | Any:
        """Run one Redis call behind the core's breaker and outbox replay; UNAVAILABLE on
        failure. Flows use it for every command; other modules for the commands they build
        themselves (pipelines, scans) on this front."""
        core = self.core
        if not core.admit():
            return UNAVAILABLE
        try:
            if len(core.outbox):
                self._drive(core.replay(), guarded=False)
            result = fn(*args, **kwargs)
        except RedisError as exc:
            return core.failed(exc)
        core.succeeded()
        return result

    # --- operations: I/O only ------------------------------------------------------------------
    def _read(self, op: Read) -> Any:
        return self._get(op.key)

    def _read_many(self, op: ReadMany) -> Any:
        return self._mget_primary(op.keys)

    def _write(self, op: Write) -> Any:
        return self._writer.set(op.key, op.payload, px=op.px)

    def _write_guarded_one(self, op: WriteGuarded) -> Any:
        return self._write_guarded(keys=[op.key, op.lease_key], args=op.args())

    def _write_many(self, op: WriteMany) -> Any:
        if op.guarded:
            return self._scripted(self._write_guarded, op.items)
        pipe = self._writer.pipeline(transaction=False)
        for item in op.items:
            pipe.set(item.key, item.payload, px=item.px)
        return pipe.execute()

    def _retire_many(self, op: Retire) -> Any:
        return self._scripted(self._retire, op.items)

    def _scripted(self, script: Any, items: list[WriteGuarded]) -> Any:
        """One call of a key-and-lease script per item, in one pipeline: the replies."""
        pipe = self._writer.pipeline(transaction=False)
        for item in items:
            script(keys=[item.key, item.lease_key], args=item.args(), client=pipe)
        return pipe.execute()

    def _unlink(self, op: Unlink) -> int:
        if self._cluster:
            # Cross-slot UNLINK is not allowed; redis-py splits DEL per slot node.
            return int(self._writer.delete(*op.keys))
        return int(self._writer.unlink(*op.keys))

    def _take_lease(self, op: TakeLease) -> bool:
        return bool(self._writer.set(op.lease_key, op.token, nx=True, px=op.ms))

    def _release_lease(self, op: ReleaseLease) -> Any:
        return self._release(keys=[op.lease_key], args=[op.token])

    def _fill_one(self, op: Fill) -> Any:
        return self._fill(
            keys=[op.key, op.lease_key], args=[op.token, op.payload, op.px, op.version]
        )

    def _pipeline(self, op: Pipeline) -> Any:
        pipe = self._writer.pipeline(transaction=False)
        queue_commands(pipe, op.commands, self._cluster)
        return pipe.execute()

    def _ping(self, op: Ping) -> Any:
        return self._writer.ping()

    def _info(self, op: Info) -> Any:
        return self._writer.info(op.section)

    def _load(self, op: Load) -> Any:
        return op.loader()

    def _sleep(self, op: Sleep) -> None:
        time.sleep(op.seconds)

    # --- reads ---------------------------------------------------------------------------------
    def get(self, key: str, data_type: DataType = DataType.DEFAULT) -> Any:
        """The cached value (stale ones included), NOT_FOUND for a cached absence, else MISS."""
        # The hot path: one guarded GET and the core's decision, no flow (CacheCore.read_one).
        core = self.core
        near = core.near_for(data_type)
        if near is None:
            raw = self.run(self._get, key) if core.enabled else None
            return core.read_one(raw, key, data_type)
        node = near.hit(key)
        if node is not None:
            return core.near_value(node, data_type)
        ticket = near.seq  # before the GET: an invalidation after it refuses the keep
        return core.read_one(self.run(self._get, key), key, data_type, ticket)

    def get_many(self, keys: Sequence[str], data_type: DataType = DataType.DEFAULT) -> list[Any]:
        """Values in the order of ``keys`` (MISS where absent), in one round trip."""
        core = self.core
        raws = self.run(self._mget, list(keys)) if keys and core.enabled else None
        return core.read_many(keys, raws, data_type)

    def fetch(
        self,
        key: str,
        loader: Callable[[], Any],
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
    ) -> Fetched:
        """Cache-aside (see cache/loading.py): the value and how it was served."""
        core = self.core
        seen: Seen | None = None
        if core.enabled:  # a hit takes one guarded GET and no flow, like get()
            ticket = core.near_first(key, data_type)
            if isinstance(ticket, Fetched):
                return ticket
            first = core.fetched(self.run(self._get, key), key, data_type, ticket)
            if isinstance(first, Fetched):
                return first
            seen = first
        flow = core.fetch(key, loader, data_type, ttl, version_of, seen)
        fetched: Fetched = self._drive(flow)
        return fetched

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], Any],
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
    ) -> Any:
        """Cache-aside. ``loader`` returns the value, or NOT_FOUND to cache an absence briefly."""
        return self.fetch(key, loader, data_type, ttl=ttl, version_of=version_of).value

    # --- writes --------------------------------------------------------------------------------
    def set(
        self,
        key: str,
        value: Any,
        data_type: DataType = DataType.DEFAULT,
        *,
        ttl: float | None = None,
        version: int = 0,
    ) -> bool:
        return bool(self._drive(self.core.set(key, value, data_type, ttl, version)))

    def set_many(
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
        return bool(self._drive(flow))

    def write_through(
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
        return bool(self._drive(self.core.write_through(key, value, version, data_type, ttl)))

    def delete(self, *keys: str) -> int:
        """Remove keys (and kill their in-flight fills); queued for replay if Redis is down."""
        return int(self._drive(self.core.delete(keys)))

    def invalidate(self, keys: Iterable[str]) -> int:
        return self.delete(*keys)

    def generations(self, tags: Sequence[str]) -> tuple[int, ...] | None:
        """The current generation of each tag (see CacheCore.generations); None when down."""
        gens: tuple[int, ...] | None = self._drive(self.core.generations(tags))
        return gens

    def bump(self, tags: Iterable[str], *, drop: Collection[str] = ()) -> bool:
        """New generations for ``tags`` and ``drop`` deleted, one round trip (CacheCore.bump)."""
        return bool(self._drive(self.core.bump(tags, drop)))

    def ping(self) -> bool:
        return bool(self._drive(self.core.ping()))

    def info(self, section: str | None = None) -> dict[str, Any] | None:
        """Redis INFO of the writer (the master), or None when Redis is unavailable."""
        answer: dict[str, Any] | None = self._drive(self.core.info(section))
        return answer
