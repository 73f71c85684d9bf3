"""Cache-aside with single flight: the one flow behind get_or_load, fetch and @cached.

One read decides. A fresh entry is served (HIT) unless XFetch draws an early refresh. A stale
entry, or one drawn for a refresh, is refreshed by the one caller that takes the key's lease;
the others are served the entry they read (STALE, or HIT when it is still fresh). A missing
entry is loaded by the lease holder (MISS) while the others wait for its fill (HIT), and load
themselves if it never comes. Fills go through scripts.FILL: only the lease holder may fill,
never over a newer version (``version_of``), and an invalidation during the load (which
deletes the lease) refuses it. Redis unavailable: the loader runs and nothing is stored.

The flow reports how the value was served (:class:`cache.ops.Fetched`), so a caller such as
the API's middleware needs no second read to set X-Cache and Cache-Control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache.codec import Entry
from cache.errors import LoadDeclined
from cache.metrics import TypeCounters
from cache.ops import (
    UNAVAILABLE,
    Fetched,
    Fill,
    Flow,
    Load,
    Outcome,
    Read,
    ReleaseLease,
    Sleep,
    TakeLease,
)
from cache.types import NOT_FOUND, DataType

if TYPE_CHECKING:
    from cache.flow import CacheCore, VersionOf

HIT, STALE, MISS = Outcome.HIT, Outcome.STALE, Outcome.MISS
FIRST_POLL = 0.002  # seconds before the first re-read while another caller loads
LAST_POLL = 0.05  # the re-read interval doubles up to this


@dataclass(slots=True)
class Seen:
    """What the first read of a fetch found, when it was not simply served."""

    unavailable: bool  # Redis did not answer
    entry: Entry | None  # None: nothing (readable) cached
    now: float
    fresh: bool


def first(
    core: CacheCore, raw: Any, key: str, data_type: DataType, ticket: int = -1
) -> Fetched | Seen:
    """Decide on the first read's answer: a fresh entry that XFetch does not pick for an early
    refresh is served (HIT). Anything else is a :class:`Seen` for :func:`fetch` to go on from.
    ``ticket``: the near tier's, taken before the GET (-1: not asked); a served entry is kept
    there (cache.near.NearCache.keep decides).

    A front calls this itself after its one GET, so a hit runs no flow (like get()).
    """
    counters = core.metrics.by_type[data_type]
    now = core.clock()
    if raw is None or raw is UNAVAILABLE:
        return Seen(raw is UNAVAILABLE, None, now, False)
    entry = core.decode(raw, counters, key)
    if entry is None:
        return Seen(False, None, now, False)
    fresh = now < entry.soft_expires_at
    if fresh and not core.refresh_early(entry, now):
        served = _served(core, entry, counters, now)
        if ticket >= 0 and core.near is not None:
            served.node = core.near.keep(key, entry, ticket)
        return served
    return Seen(False, entry, now, fresh)


def fetch(
    core: CacheCore,
    key: str,
    loader: Callable[[], Any],
    data_type: DataType,
    ttl: float | None = None,
    version_of: VersionOf | None = None,
    seen: Seen | None = None,
) -> Flow:
    """The fetch, as a flow; ``seen``: the front made the first read already (see first())."""
    counters = core.metrics.by_type[data_type]
    if not core.enabled:
        counters.misses += 1
        return (yield from _bypass(core, loader, counters, missed=True))
    if seen is None:
        answer = first(core, (yield Read(key)), key, data_type)
        if isinstance(answer, Fetched):
            return answer
        seen = answer
    if seen.unavailable:
        return (yield from _bypass(core, loader, counters, missed=False))
    entry, now, fresh = seen.entry, seen.now, seen.fresh
    lease_key, token = core.keys.lease(key), core.new_token()
    fill = _Fill(core, key, lease_key, token, loader, data_type, ttl, version_of, counters)

    if entry is not None:
        # Stale, or drawn for an early refresh: one caller refreshes, the rest are served.
        if (yield TakeLease(lease_key, token, core.lease_ms)) is not True:
            return _served(core, entry, counters, now)
        newer = yield from _filled_meanwhile(core, fill, entry.created_at)
        if newer is not None:
            return newer
        if fresh:
            counters.early_refreshes += 1
        else:
            counters.misses += 1
        return (yield from fill.load_and_fill(missed=not fresh))

    counters.misses += 1
    taken = yield TakeLease(lease_key, token, core.lease_ms)
    if taken is True:
        newer = yield from _filled_meanwhile(core, fill, 0.0)
        if newer is not None:
            return newer
        return (yield from fill.load_and_fill(missed=True))
    if taken is UNAVAILABLE:
        return (yield from _bypass(core, loader, counters, missed=True))

    # Another caller holds the lease and is loading: wait for its value.
    counters.lease_waits += 1
    deadline = core.monotonic() + core.lease_ms / 1000
    delay = FIRST_POLL
    while core.monotonic() < deadline:
        yield Sleep(delay)
        raw = yield Read(key)
        if raw is UNAVAILABLE:
            break
        if raw is not None and (entry := core.decode(raw, counters, key)) is not None:
            return Fetched(core.present(entry), HIT, _fresh_for(entry, core.clock()))
        delay = min(delay * 2, LAST_POLL)

    # The lease holder is late or gone: load ourselves; fill only if the lease is ours now.
    if (yield TakeLease(lease_key, token, core.lease_ms)) is True:
        return (yield from fill.load_and_fill(missed=True))
    return (yield from _bypass(core, loader, counters, missed=True))


def _served(core: CacheCore, entry: Entry, counters: TypeCounters, now: float) -> Fetched:
    """The entry we read, served as it is: HIT while fresh, else STALE."""
    core.count_served(entry, counters, now)
    left = entry.soft_expires_at - now
    value = NOT_FOUND if entry.not_found else entry.value
    return Fetched(value, HIT, left) if left > 0 else Fetched(value, STALE, 0.0)


def _fresh_for(entry: Entry, now: float) -> float:
    return max(entry.soft_expires_at - now, 0.0)


def _filled_meanwhile(core: CacheCore, fill: _Fill, seen_created: float) -> Flow:
    """After taking the lease, read again: another caller may have filled the key between
    our read and our lease (its fill frees the lease). Then its value is served."""
    raw = yield Read(fill.key)
    if raw is None or raw is UNAVAILABLE:
        return None
    entry = core.decode(raw, fill.counters, fill.key)
    now = core.clock()
    if entry is None or entry.created_at <= seen_created or entry.is_stale(now):
        return None
    yield ReleaseLease(fill.lease_key, fill.token)
    core.count_served(entry, fill.counters, now)
    return Fetched(core.present(entry), HIT, _fresh_for(entry, now))


def _bypass(
    core: CacheCore, loader: Callable[[], Any], counters: TypeCounters, *, missed: bool
) -> Flow:
    """Load without the cache (disabled, or Redis unavailable): MISS, not cached."""
    value, _seconds = yield from _load(core, loader, counters, missed=missed)
    return Fetched(value, MISS, None)


def _load(
    core: CacheCore, loader: Callable[[], Any], counters: TypeCounters, *, missed: bool
) -> Flow:
    """Run the loader, timed and counted; its error is counted and raised.

    A loader that declines (LoadDeclined: the source refused the caller's request, a 404 or
    a 422) is no error of the cache and no miss either: it is counted as ``declined``, so a
    scraper asking for what does not exist moves neither the error rate nor the hit rate.
    ``missed``: this fetch counted a miss before loading, which the decline takes back.
    """
    started = core.timer()
    try:
        value = yield Load(loader)
    except LoadDeclined:
        counters.declined += 1
        if missed:
            counters.misses -= 1
        raise
    except BaseException:
        counters.load_errors += 1
        raise
    seconds = core.timer() - started
    counters.loads += 1
    counters.load_seconds.observe(seconds)
    return value, seconds


class _Fill:
    """What loading under a held lease needs: the key, the lease, how to envelope."""

    __slots__ = (
        "core",
        "counters",
        "data_type",
        "key",
        "lease_key",
        "loader",
        "token",
        "ttl",
        "version_of",
    )

    def __init__(
        self,
        core: CacheCore,
        key: str,
        lease_key: str,
        token: str,
        loader: Callable[[], Any],
        data_type: DataType,
        ttl: float | None,
        version_of: VersionOf | None,
        counters: TypeCounters,
    ) -> None:
        self.core, self.key, self.lease_key, self.token = core, key, lease_key, token
        self.loader, self.data_type, self.ttl, self.version_of = loader, data_type, ttl, version_of
        self.counters = counters

    def load_and_fill(self, *, missed: bool) -> Flow:
        """Load under our lease and fill: MISS, fresh for the new soft TTL when stored."""
        core, counters = self.core, self.counters
        try:
            value, seconds = yield from _load(core, self.loader, counters, missed=missed)
            version_of = self.version_of
            version = version_of(value) if version_of and value is not NOT_FOUND else 0
            # A value the codec refuses (not JSON) raises here too: the lease goes first.
            payload, px, soft = core.envelope_soft(
                value, self.data_type, self.ttl, seconds, version
            )
        except BaseException:
            yield ReleaseLease(self.lease_key, self.token)
            raise
        stored = yield Fill(self.key, self.lease_key, self.token, payload, px, version)
        if stored is UNAVAILABLE:
            counters.skipped_writes += 1
        elif stored == 1:
            counters.writes += 1
            return Fetched(value, MISS, soft)
        else:  # our lease was taken away (an invalidation) or a newer version is cached
            counters.writes_rejected += 1
        return Fetched(value, MISS, None)
