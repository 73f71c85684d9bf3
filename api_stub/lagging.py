"""A report or a list page served within its kind's lag of a change (cache.kinds: Kind.lag).

Every member write bumps the generations of the aggregates and of the list pages, so the
next reader of each one misses and, with no lag, waits for a recompute: at 100,000 members
and 3.4 writes a second, the replay's dashboard p99 was 0.6 to 5.5 s and the list pages'
51 to 105 ms (bench.replay), against 1 to 3 ms for a hit. A kind that declares a lag lets
that reader be served the last value this process knew to be current, while one recompute
runs behind it and stores the new value under the new generations.

The bound: a value is *confirmed* at the start of the request that read it or computed it
under the generations then current, so it reflects every change acknowledged before that
moment. It is served only within ``lag`` seconds of that moment, so a reader never misses a
change older than the lag (a ``clear`` is such a change: it deletes the generations).

The current key is read first (another process, a warm-up after a ``clear``, or this
process's recompute may have stored it); when it is missing the kept value is served, and
once it is older than half the lag one recompute starts behind the answer. So a steady
stream of writes costs one recompute per variant and half lag, not one per write. The
recompute must end within the other half, or readers past the lag wait for it: at
1,000,000 members the dashboard took 5 to 10 s to recompute under the replay's load, and
with a 10-s lag its p99 stayed at 9.7 s, so the reports lag by 30 s (cache/kinds.py).

A process that has no value of a variant yet (a restart, a deploy) and finds the current
entry missing looks for one under the last generations of the kind's tag (api_stub.caching:
``_earlier``), confirmed when its computation began.

A request with ``Cache-Control: no-cache`` (or ``max-age=0``, a browser's reload) is never
served a lagging value.

The same rule serves a value a route computes itself (:class:`LaggingValues`): a list page's
total (cache.kinds: member_count), so that recomputing a page reads its rows, not a count.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cache import AsyncCacheService
from cache.kinds import Kind

log = logging.getLogger("api_stub.lagging")

# Variants kept per process: the aggregates are a handful; list pages are one per filter set
# and page, and the least recently used go first.
CAPACITY: Final = 256


@dataclass(frozen=True, slots=True)
class Kept:
    key: str  # the entry's key when the value was current: it names those generations
    value: Any
    confirmed: float  # monotonic seconds: the start of the request that found it current


class KeptValues:
    """The last value known current of each variant of the lagging kinds, in this process."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._kept: OrderedDict[Hashable, Kept] = OrderedDict()
        self._capacity = capacity

    def keep(self, variant: Hashable, key: str, value: Any, confirmed: float) -> None:
        """Keep ``value`` unless a value confirmed later is kept (a slow recompute that
        ends after a newer read must not replace it)."""
        kept = self._kept.get(variant)
        if kept is not None and kept.confirmed > confirmed:
            return
        self._kept[variant] = Kept(key, value, confirmed)
        self._kept.move_to_end(variant)
        if len(self._kept) > self._capacity:
            self._kept.popitem(last=False)

    def get(self, variant: Hashable) -> Kept | None:
        return self._kept.get(variant)

    def within(self, variant: Hashable, now: float, lag: float) -> Kept | None:
        """The kept value when it was confirmed at most ``lag`` seconds before ``now``."""
        kept = self._kept.get(variant)
        if kept is None or now - kept.confirmed > lag:
            return None
        return kept

    def __len__(self) -> int:
        return len(self._kept)


def behind_due(kept: Kept, now: float, lag: float) -> bool:
    """Whether a lagging answer starts the one recompute behind it: its value is older than
    half the lag, so the recompute has the other half to end before readers would wait."""
    return now - kept.confirmed >= lag / 2


class LaggingValues:
    """Values a route computes itself (not whole answers), served within their kind's lag
    of a change by the rule above: the member list's totals (cache.kinds: member_count).

    A page of the list is an index scan in id order (0.6 ms at 1,000,000 members), its total
    a count over every matching index entry (26 ms for one tier, idle): with the total
    lagging, recomputing a page costs the scan, and the count runs behind its readers once
    per half lag. Redis away: the value is computed (slower, never older than asked).
    """

    def __init__(self, max_lag: float = math.inf, capacity: int = CAPACITY) -> None:
        self._kept = KeptValues(capacity)
        self._max_lag = max_lag
        self._behind: dict[Hashable, asyncio.Task[None]] = {}

    async def get(
        self,
        cache: AsyncCacheService,
        kind: Kind,
        params: Sequence[Any],
        load: Callable[[], Awaitable[Any]],
        *,
        current: bool = False,
    ) -> Any:
        """The value of ``kind`` for ``params``: within its lag, or (``current``) now."""
        lag = min(kind.lag, self._max_lag)
        started = time.monotonic()  # current as of this moment: before the generations' read
        gens = await cache.generations(kind.tags)
        if gens is None:
            return await load()
        key = kind.key(cache.keys, params, gens)
        variant = (kind.name, tuple(params))
        kept = None if current or lag <= 0 else self._kept.within(variant, started, lag)
        if kept is not None:
            if kept.key != key and behind_due(kept, started, lag):
                self._recompute_behind(cache, kind, key, variant, load, started)
            return kept.value
        fetched = await cache.fetch(key, load, kind.data_type)
        self._kept.keep(variant, key, fetched.value, started)
        return fetched.value

    def _recompute_behind(
        self,
        cache: AsyncCacheService,
        kind: Kind,
        key: str,
        variant: Hashable,
        load: Callable[[], Awaitable[Any]],
        started: float,
    ) -> None:
        """One recompute of the variant at a time; its value is stored under ``key`` and
        kept, confirmed at ``started``."""
        if variant in self._behind:
            return

        async def recompute() -> None:
            try:
                fetched = await cache.fetch(key, load, kind.data_type)
            except Exception:  # the next reader past the lag computes it itself
                log.warning("recompute of %s failed", kind.name, exc_info=True)
                return
            finally:
                self._behind.pop(variant, None)
            self._kept.keep(variant, key, fetched.value, started)

        self._behind[variant] = asyncio.get_running_loop().create_task(recompute())


def wants_current(headers: Mapping[bytes, bytes]) -> bool:
    """Whether the request's Cache-Control refuses a value that may predate a change
    (RFC 9111 5.2.1: ``no-cache``, or ``max-age=0``)."""
    control = headers.get(b"cache-control")
    if not control:
        return False
    for directive in control.lower().split(b","):
        name, _, value = directive.strip().partition(b"=")
        if name == b"no-cache" or (name == b"max-age" and value.strip(b' "') == b"0"):
            return True
    return False
