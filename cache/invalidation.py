"""Invalidation after a write: member write-through and tag generations, in O(1) round trips.

What a member change touches (the kinds that declare it in cache.kinds)::

    member created or updated  -> write-through of the member (version-guarded) + bump MEMBER_TAGS
    member deleted             -> a NOT_FOUND entry at the deleted version + 1 + bump MEMBER_TAGS
    N members imported         -> bump MEMBER_TAGS + drop the N member keys, one round trip
    N members updated/deleted in bulk -> the same: one round trip whatever N

Entries computed from many members (aggregates, list pages) fold the generation of their tags
into their key (see :func:`generations`; the decisions are the flows of cache/generations.py,
which both fronts drive). Bumping a tag with INCR moves
every reader to new keys at once, whatever the number of entries; the orphans expire on their
own TTL.

A generation key that is missing (never set, evicted, or deleted) starts again at a random
62-bit value, never at one an earlier generation used. Deleting a generation key is therefore
a bump as well, which is what lets the outbox, whose replay deletes keys, keep the bumps that
failed while Redis was down.

Call these after the database commit: a reader that fills between the commit and the bump
stores under the old generation, which nobody reads after the bump.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from cache.aio import AsyncCacheService
from cache.breaker import BreakerState
from cache.generations import GENERATION_BITS, fresh_generation
from cache.kinds import KINDS, Change
from cache.service import CacheService
from cache.types import NOT_FOUND, DataType

# Everything computed from the members table (cache.kinds): a member change bumps all of them.
MEMBER_TAGS: Final = KINDS.tags_for(Change.UPDATE)

# How long Redis may be back before this process replays its outbox and closes its breaker.
REPLAY_SECONDS: Final = 0.1


# The generation machinery is one flow of the core (CacheCore.generations, CacheCore.bump),
# driven by either front; these are the names the rest of the code calls.
async def generations(cache: AsyncCacheService, tags: Sequence[str]) -> tuple[int, ...] | None:
    """The current generation of each tag: one round trip, two when a key must be started.

    None when Redis is unavailable: then nothing derived from the tags may be read or stored.
    """
    return await cache.generations(tags)


def generations_sync(cache: CacheService, tags: Sequence[str]) -> tuple[int, ...] | None:
    """:func:`generations` for the sync front (the Celery warm-up)."""
    return cache.generations(tags)


async def bump(
    cache: AsyncCacheService, tags: Iterable[str], *, drop: Collection[str] = ()
) -> bool:
    """Start a new generation of each tag and delete ``drop`` (with their leases), in one
    round trip. True when Redis took it; else it is queued in the outbox for replay."""
    return await cache.bump(tags, drop=drop)


def bump_sync(cache: CacheService, tags: Iterable[str], *, drop: Collection[str] = ()) -> bool:
    """:func:`bump` for the sync front (Celery workers)."""
    return cache.bump(tags, drop=drop)


async def member_saved(
    cache: AsyncCacheService,
    member: Mapping[str, Any],
    *,
    tags: Iterable[str] = KINDS.tags_for(Change.UPDATE),
) -> None:
    """A member was created or updated (committed): store it, then bump what derives from it.

    Two round trips. What Redis does not take waits in the outbox.
    """
    key = cache.keys.member(int(member["id"]))
    await cache.write_through(key, dict(member), int(member["version"]), DataType.MEMBER)
    await bump(cache, tags)


async def member_deleted(
    cache: AsyncCacheService,
    member_id: int,
    version: int,
    *,
    tags: Iterable[str] = KINDS.tags_for(Change.DELETE),
) -> None:
    """A member was deleted (committed) at ``version``: cache its absence at ``version + 1``,
    so a fill that read the row before the delete is refused, then bump what derives from it.
    """
    key = cache.keys.member(int(member_id))
    await cache.write_through(key, NOT_FOUND, int(version) + 1, DataType.MEMBER)
    await bump(cache, tags)


async def members_imported(
    cache: AsyncCacheService,
    member_ids: Iterable[int],
    *,
    tags: Iterable[str] = KINDS.tags_for(Change.IMPORT),
) -> bool:
    """Members were inserted in bulk (committed): one round trip however many.

    Their keys are dropped rather than written: a "not found" cached for an id before it
    existed must not outlive the import, and the members are loaded when first read.
    """
    return await bump(cache, tags, drop=cache.keys.members(member_ids))


async def members_changed(
    cache: AsyncCacheService, member_ids: Iterable[int], change: Change
) -> bool:
    """Members were updated or deleted in bulk (committed): their records and what derives
    from them go in one round trip however many (the records are loaded again when read)."""
    return await bump(cache, KINDS.tags_for(change), drop=cache.keys.members(member_ids))


async def replay_outbox(cache: AsyncCacheService, every: float = REPLAY_SECONDS) -> None:
    """Run until cancelled: replay pending invalidations as soon as Redis is back.

    Any command replays the outbox first, but other processes read the shared Redis too: a
    process that queued invalidations and then sits idle must not leave them pending. Nor may
    it wait for its breaker's next trial (CACHE_BREAKER_RESET_SECONDS): after a failover the
    promoted replica still holds the copies those invalidations retire, readable by every
    other process, and this process's own reads and writes bypass the cache meanwhile. So
    while the outbox holds keys or the breaker is not closed, Redis is tried every ``every``
    seconds outside the breaker (cache.aio.AsyncCacheService.recover).
    """
    core = cache.core
    while True:
        await asyncio.sleep(every)
        if len(core.outbox) or core.breaker.state is not BreakerState.CLOSED:
            await cache.recover()


__all__ = [
    "GENERATION_BITS",
    "MEMBER_TAGS",
    "REPLAY_SECONDS",
    "bump",
    "bump_sync",
    "fresh_generation",
    "generations",
    "generations_sync",
    "member_deleted",
    "member_saved",
    "members_changed",
    "members_imported",
    "replay_outbox",
]
