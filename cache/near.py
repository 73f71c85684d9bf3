"""The near tier: decoded entries in process memory, bounded by bytes, kept exact by Redis.

A near hit costs a dict lookup and no network round trip. It is only as correct as the
invalidations that reach it, so every rule here is about never keeping a value Redis has
replaced (cache/tracking.py delivers the invalidations):

- **Live only while tracking is.** An entry is served only while the tracking connection is
  known up (``live_until``: pushed forward by every message and heartbeat reply it reads).
  When it drops, the tracker calls :meth:`NearCache.flush` and nothing is served or stored
  until it is back; a reconnect flushes again, so a push missed while down can never leave a
  stale entry.
- **The read/invalidate race** (Redis's client-side caching guide): an invalidation may be
  handled before the reply of a read that fetched the old value. A read takes a ticket
  (:attr:`NearCache.seq`, the number of invalidations handled so far) before it sends its
  GET; :meth:`NearCache.keep` stores the answer only if no invalidation of that key, and no
  flush, was handled since that ticket. The check and the insert hold the lock the
  invalidations take, so nothing can slip between them. Keys invalidated while a read may be
  in flight are remembered (``_dirty``, bounded: when full it is cleared and counts as a
  flush for in-flight reads, which then simply do not store).
- **Own writes.** A write of this process drops the key at once (and counts as an
  invalidation for in-flight reads), then stores what Redis accepted under the same ticket
  rule, never over a newer version; the echo of its own push drops it a little later, which
  costs one read, never a stale one.
- **Bytes.** Each entry is charged the estimated size of its decoded value (a walk over the
  JSON tree with ``sys.getsizeof``), its key, the rendered HTTP body and ETag when attached,
  and a fixed overhead for the bookkeeping objects; least recently used entries are evicted
  until the total is within ``max_bytes``.

Values are shared by every reader of the process: treat what the cache returns as read-only.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

from cache.codec import Entry
from cache.kinds import KINDS, Registry
from cache.metrics import NearCounters
from cache.types import DataType

# Bytes charged per entry for the objects around the value: the node, the Entry, the
# OrderedDict slot and link, the key's hash entry. Measured with tracemalloc on CPython 3.11
# (tests/cache/test_near.py checks the budget holds with it).
ENTRY_OVERHEAD: Final = 360
# Keys invalidated while reads may be in flight, at most; beyond it the set is cleared and
# in-flight reads are refused as after a flush.
MAX_DIRTY: Final = 65_536
# A push naming more keys than this refuses every read in flight (cheaper than marking each);
# the tracker flushes the whole tier for it (cheaper than looking each key up).
BIG_PUSH: Final = 1024
# Generation values held at most (a tag's generation key: a few dozen in practice); beyond it
# the map starts again empty.
MAX_GENERATIONS: Final = 4096
# A busy reader drains pending invalidations itself at most this often (seconds), instead of
# waiting for the tracker thread to win the GIL (up to sys.getswitchinterval(), 5 ms).
DRAIN_EVERY: Final = 0.0005


def sizeof(value: Any) -> int:
    """Estimated bytes of a decoded JSON value (dicts, lists, strings, numbers) or bytes.

    CPython 3.11's object sizes, by type, without ``sys.getsizeof`` per object (a call each
    costs more than the rest of the walk): a str is 49 bytes plus one per ASCII character
    (non-ASCII text is charged 4 bytes a character, the most it can take), an int 28 (small
    ints are shared: charged anyway), a float 24, True/False/None nothing (singletons). Dict
    keys are charged though orjson shares short ones: the estimate errs on the high side.
    """
    kind = type(value)
    if kind is str:
        return 49 + len(value) if value.isascii() else 76 + 4 * len(value)
    if kind is dict:
        size = sys.getsizeof(value)
        for item_key, item in value.items():
            size += sizeof(item_key) + sizeof(item)
        return size
    if kind is list or kind is tuple:
        size = 56 + 8 * len(value)
        for item in value:
            size += sizeof(item)
        return size
    if kind is int:
        return 28 if -(2**30) < value < 2**30 else sys.getsizeof(value)
    if kind is float:
        return 24
    if value is None or kind is bool:
        return 0
    return sys.getsizeof(value)  # bytes (RAW entries) and anything else


def near_types(registry: Registry = KINDS) -> frozenset[DataType]:
    """The data types the tier holds: those whose every kind says ``near`` (Kind.near)."""
    return frozenset(
        data_type
        for data_type in registry.data_types
        if all(kind.near for kind in registry.of_type(data_type))
    )


def off_reason(settings: Any) -> str | None:
    """Why the near tier is off for these settings, or None when it is on."""
    if not settings.cache_enabled:
        return "CACHE_ENABLED is false"
    if not settings.cache_near_enabled:
        return "CACHE_NEAR_ENABLED is false"
    if settings.redis_read_from_replica:
        return "reads from replicas: a replica may answer the old value after the push"
    return None


def _forked(ref: weakref.ref[NearCache]) -> None:
    near = ref()
    if near is not None:
        near._lock = threading.Lock()  # a lock held by another thread at fork stays held
        near.drain = None
        near.down()


class NearNode:
    """One entry of the near tier: the decoded envelope and, once rendered, the HTTP body."""

    __slots__ = ("entry", "key", "rendered", "size")

    def __init__(self, key: str, entry: Entry, size: int) -> None:
        self.key = key
        self.entry = entry
        self.size = size
        self.rendered: tuple[bytes, bytes] | None = None  # (body, etag), see attach()


class NearCache:
    """An LRU of decoded entries, bounded by ``max_bytes``, for the data types in ``types``."""

    def __init__(
        self,
        max_bytes: int,
        types: Collection[DataType],
        counters: NearCounters,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.types = frozenset(types)
        self.counters = counters
        self.clock = clock
        self.seq = 0  # invalidations handled (keys and flushes); a read's ticket
        self.live_until = 0.0  # serve and store only before this (tracking known up)
        self.drain: Callable[[], None] | None = None  # the tracker's non-blocking read
        self._next_drain = 0.0
        self._floor = 0  # tickets below it were taken before the last flush
        self._dirty: dict[str, int] = {}  # key -> seq of its last invalidation
        self._nodes: OrderedDict[str, NearNode] = OrderedDict()
        # Tag generations (cache/generations.py): an entry keyed by generation is a near hit
        # only if its generations are too, with no round trip.
        self._generations: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        # A forked child inherits the entries but not the tracking thread: nothing it holds
        # may be served there (its own Services starts its own tracking).
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forked(ref))

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def live(self) -> bool:
        return self.clock() < self.live_until

    # --- reads -----------------------------------------------------------------------------
    def hit(self, key: str) -> NearNode | None:
        """The fresh entry of ``key`` while tracking is up, else None (counted either way).

        Stale entries are not served from here: the core's fetch decides on them (refresh
        under the lease), reading Redis.
        """
        now = self.clock()
        if now >= self.live_until:
            self.counters.misses += 1
            return None
        if now >= self._next_drain and self.drain is not None:
            self._next_drain = now + DRAIN_EVERY
            self.drain()
        node = self._nodes.get(key)
        if node is None or now >= self.live_until or now >= node.entry.soft_expires_at:
            self.counters.misses += 1
            return None
        try:
            self._nodes.move_to_end(key)
        except KeyError:  # invalidated meanwhile by the tracker thread
            self.counters.misses += 1
            return None
        self.counters.hits += 1
        return node

    def keep(self, key: str, entry: Entry, ticket: int) -> NearNode | None:
        """Store what a read that took ``ticket`` (before its GET) found, unless the key was
        invalidated since, or a flush happened, or tracking is down, or a newer version is
        held."""
        if self.clock() >= self.live_until:  # before the walk: nothing is kept while down
            return None
        size = ENTRY_OVERHEAD + sys.getsizeof(key) + sizeof(entry.value)
        if size > self.max_bytes:
            return None
        with self._lock:
            if (
                ticket < self._floor
                or self._dirty.get(key, -1) > ticket
                or self.clock() >= self.live_until
            ):
                self.counters.refused += 1
                return None
            old = self._nodes.get(key)
            if old is not None:
                if old.entry.version > entry.version:
                    return None
                self._remove(old)
            node = NearNode(key, entry, size)
            self._nodes[key] = node
            self._bytes += size
            self._evict()
        return node

    def attach(self, node: NearNode, body: bytes, etag: bytes) -> None:
        """Keep the rendered HTTP body and ETag beside the value (a near hit then encodes
        nothing); charged to the budget."""
        if node.rendered is not None:
            return
        extra = sys.getsizeof(body) + sys.getsizeof(etag) + 56
        with self._lock:
            if self._nodes.get(node.key) is not node:  # invalidated or evicted meanwhile
                return
            node.rendered = (body, etag)
            node.size += extra
            self._bytes += extra
            self._evict()

    def recent(self) -> list[str]:
        """The held keys, the most recently read first: what this process's readers want now
        (a management clear refills those first)."""
        with self._lock:  # against the tracker's invalidations; list() is one step for a hit
            held = list(self._nodes)
        held.reverse()
        return held

    # --- tag generations --------------------------------------------------------------------
    def generations(self, keys: list[str]) -> tuple[int, ...] | None:
        """The held values of these generation keys while tracking is up, else None."""
        now = self.clock()
        if now >= self.live_until:
            return None
        if now >= self._next_drain and self.drain is not None:
            self._next_drain = now + DRAIN_EVERY
            self.drain()
        held = self._generations
        try:
            values = tuple(held[key] for key in keys)
        except KeyError:
            return None
        return values if self.clock() < self.live_until else None

    def keep_generations(self, keys: list[str], values: tuple[int, ...], ticket: int) -> None:
        """Hold what a read that took ``ticket`` found, under the rule of :meth:`keep`."""
        if self.clock() >= self.live_until:
            return
        with self._lock:
            if ticket < self._floor or self.clock() >= self.live_until:
                return
            dirty = self._dirty
            if any(dirty.get(key, -1) > ticket for key in keys):
                return
            if len(self._generations) + len(keys) > MAX_GENERATIONS:
                self._generations.clear()
            self._generations.update(zip(keys, values, strict=True))

    # --- invalidation ------------------------------------------------------------------------
    def invalidate(self, keys: Iterable[str] | None) -> None:
        """Keys Redis says changed (a push), or None: everything (a flush of the database)."""
        if keys is None:
            self.flush()
            return
        keys = keys if isinstance(keys, list) else list(keys)
        nodes = self._nodes
        with self._lock:
            self.counters.invalidations += len(keys)
            if len(keys) > BIG_PUSH:
                # A bulk write (an import's UNLINK of every member): refuse every read in
                # flight, as a flush does, instead of remembering each key; drop what is held.
                self.seq += 1
                self._floor = self.seq
                self._dirty.clear()
                self._generations.clear()
                for key in keys:
                    node = nodes.get(key)
                    if node is not None:
                        self._remove(node)
                return
            generations = self._generations
            for key in keys:
                self._mark(key)
                generations.pop(key, None)
                node = nodes.get(key)
                if node is not None:
                    self._remove(node)

    def drop(self, keys: Iterable[str]) -> None:
        """Own writes: forget the keys now, and refuse in-flight reads of them."""
        with self._lock:
            for key in keys:
                self._mark(key)
                self._generations.pop(key, None)
                node = self._nodes.get(key)
                if node is not None:
                    self._remove(node)

    def flush(self) -> None:
        """Drop everything and refuse every read in flight (tracking lost or reconnected)."""
        with self._lock:
            self.seq += 1
            self._floor = self.seq
            self._dirty.clear()
            self._nodes.clear()
            self._generations.clear()
            self._bytes = 0
            self.counters.flushes += 1
            self.counters.bytes = 0
            self.counters.entries = 0

    def down(self) -> None:
        """Tracking is lost: stop serving at once, then flush."""
        self.live_until = 0.0
        self.flush()

    # --- inside the lock -------------------------------------------------------------------
    def _mark(self, key: str) -> None:
        self.seq += 1
        if len(self._dirty) >= MAX_DIRTY:
            self._dirty.clear()
            self._floor = self.seq
        self._dirty[key] = self.seq

    def _remove(self, node: NearNode) -> None:
        del self._nodes[node.key]
        self._bytes -= node.size
        self.counters.bytes = self._bytes
        self.counters.entries = len(self._nodes)

    def _evict(self) -> None:
        nodes = self._nodes
        while self._bytes > self.max_bytes and nodes:
            _key, node = nodes.popitem(last=False)
            self._bytes -= node.size
            self.counters.evictions += 1
        self.counters.bytes = self._bytes
        self.counters.entries = len(nodes)
