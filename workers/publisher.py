"""Each process's cache counters, published to Redis so one job can merge them all.

Counters live in process (cache.metrics, no round trip to record). Every ``interval`` seconds a
daemon thread publishes ``CacheService.core.snapshot()`` plus any extra sections (the
invalidation lifetimes of tasks/lifetimes.py, a runtime part; the API's request latency per
kind, api_stub/management/latency.py) in one pipelined step. Workers publish as role
``worker`` (workers/runtime.py), each API process as ``api`` (api_stub/app.py's lifespan)::

    SET  <prefix>sys:metrics:<process>  {"process", "role", "published_at", "snapshot", ...}  EX ttl
    ZADD <prefix>sys:processes  <now> <process>        the index the reader walks (never KEYS)
    ZREMRANGEBYSCORE <prefix>sys:processes -inf <now - ttl>

A process that stops publishing (it exited, or was killed) drops out after ``ttl``: the merge
covers live processes, and the snapshots in PostgreSQL keep what each one had counted. The
counters are cumulative since the process started (``started_at`` tells one run of a pid from
the next), so readers compute deltas, never trust a single value as "per minute".

Publishing is best effort: a failure is logged and the next interval tries again.

The documents are platform state: a process passes its durable role's client
(``services.redis("durable")``) as ``client``; without one they go to the cache front's own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from redis.exceptions import RedisError

from cache import CacheService
from cache.client import SyncRedis
from cache.flow import UNAVAILABLE

log = logging.getLogger("workers.publisher")

INTERVAL: Final = 10.0  # seconds between publications: a fraction of the snapshot's minute
TTL_INTERVALS: Final = 3  # one missed publication does not drop a process from the merge

Extra = Callable[[], dict[str, Any]]


def process_id(role: str) -> str:
    """``<role>-<host>-<pid>``, reduced to the characters a key part may hold."""
    raw = f"{role}-{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", raw)[:120]


class MetricsPublisher:
    def __init__(
        self,
        cache: CacheService,
        role: str,
        *,
        interval: float = INTERVAL,
        extras: Mapping[str, Extra] | None = None,
        process: str | None = None,
        client: SyncRedis | None = None,
    ) -> None:
        self.cache = cache
        self.client = client if client is not None else cache.clients.writer
        self.role = role
        self.interval = interval
        self.ttl = max(1, round(interval * TTL_INTERVALS))
        self.extras = dict(extras or {})
        self.process = process or process_id(role)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One publication at a time: the thread's and an explicit one (a snapshot's, a
        # shutdown's) must not interleave, or an older document lands after a newer one.
        self._publishing = threading.Lock()

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "process": self.process,
            "role": self.role,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "published_at": time.time(),
            "snapshot": self.cache.snapshot(),
        }
        # A copy: a part built on another thread may add an extra meanwhile (workers/runtime.py).
        for name, extra in tuple(self.extras.items()):
            doc[name] = extra()
        return doc

    def publish(self) -> bool:
        """One pipelined publication; False when Redis did not take it."""
        with self._publishing:
            keys = self.cache.keys
            now = time.time()
            pipe = self.client.pipeline(transaction=False)
            document = json.dumps(self.document())
            pipe.set(keys.system("metrics", self.process), document, ex=self.ttl)
            pipe.zadd(keys.system("processes"), {self.process: now})
            pipe.zremrangebyscore(keys.system("processes"), "-inf", now - self.ttl)
            # The index outlives its members by a day at most once every process is gone.
            pipe.expire(keys.system("processes"), 86_400)
            # Through the breaker: nothing is sent while Redis is known to be away.
            if self.cache.run(pipe.execute) is UNAVAILABLE:
                log.debug("metrics of %s not published: Redis unavailable", self.process)
                return False
            return True

    def start(self) -> MetricsPublisher:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"metrics-publisher-{self.process}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, *, flush: bool = True) -> None:
        """Stop the thread; with ``flush`` publish the final counters first."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 1)
        self._thread = None
        if flush:
            self.publish()

    def _run(self) -> None:
        self.publish()
        while not self._stop.wait(self.interval):
            self.publish()


def read_published(
    cache: CacheService, client: SyncRedis | None = None
) -> dict[str, dict[str, Any]]:
    """The documents of every live process, by process id: two round trips, whatever the
    size of the keyspace (the index, then one pipelined GET per process). ``client`` as for
    MetricsPublisher."""
    keys = cache.keys
    client = client if client is not None else cache.clients.writer
    try:
        members = client.zrangebyscore(keys.system("processes"), time.time() - 3600, "+inf")
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        if not names:
            return {}
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.get(keys.system("metrics", name))
        raws = pipe.execute()
    except RedisError as exc:
        log.warning("published metrics unreadable: %s", exc)
        return {}
    found: dict[str, dict[str, Any]] = {}
    for name, raw in zip(names, raws, strict=True):
        if raw is None:
            continue  # expired: the process stopped publishing
        try:
            found[name] = json.loads(raw)
        except ValueError:
            log.warning("published metrics of %s are not JSON; ignored", name)
    return found
