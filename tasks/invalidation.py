"""Invalidation tasks (queue cache.invalidate): the Python side of CacheInvalidationHooks.

What a change touches is declared per kind (cache.kinds, ``invalidated_by``) and decided here
by a pure function over Keys and the tags' generations::

    a member created, updated or deleted  -> its record + the current entries of every kind
                                             it invalidates, and a bump of their tags
    a bulk operation (import, update, delete) of N members -> the current entries of every
                                             kind it invalidates, and a bump of their tags

A bump moves every reader to new keys at once (the API and the warm-up fold the generations
into their keys, ``Kind.key``), whatever the number of entries: list pages and aggregates
retire together. The current entries are deleted in the same pipelined step only to free
their memory early and to record their age for the weekly TTL review (tasks/lifetimes.py):
the task reads the generations, then each entry's header (one pipelined GETRANGE), then
bumps and deletes (cache.invalidation.bump_sync): three round trips whatever the count.

A step that cannot reach Redis is queued by the cache service and the task raises
CacheUnavailable, so Celery retries it with backoff and jitter: the broker holds the message
until a retry succeeds, which makes the queue itself the durable outbox for these hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from celery import Task, shared_task

from cache import CacheService, Keys
from cache.errors import CacheUnavailable
from cache.invalidation import bump_sync, generations_sync
from cache.kinds import KINDS, Change, Storage
from tasks.lifetimes import Lifetimes, read_ages, record_invalidations
from tasks.runtime import runtime_of
from workers import routing
from workers.routing import BULK_KINDS, MEMBER_ACTIONS

_BULK_CHANGES: Final = {
    "import": Change.IMPORT,
    "update": Change.BULK_UPDATE,
    "delete": Change.BULK_DELETE,
}

RETRY_ON: Final = (CacheUnavailable,)


def member_change(action: str) -> Change:
    if action not in MEMBER_ACTIONS:
        raise ValueError(f"unknown member action {action!r}; expected one of {MEMBER_ACTIONS}")
    return Change(action)


def bulk_change(kind: str, affected_count: int) -> Change | None:
    """The change of a bulk operation; None when it touched no member."""
    if kind not in BULK_KINDS:
        raise ValueError(f"unknown bulk operation {kind!r}; expected one of {BULK_KINDS}")
    if int(affected_count) < 0:
        raise ValueError("affected_count must be >= 0")
    return _BULK_CHANGES[kind] if int(affected_count) else None


def affected_keys(
    keys: Keys, change: Change, gens: Mapping[str, int], member_id: int | None = None
) -> list[str]:
    """The cached keys ``change`` retires now: the member's record (when given) and every
    variant of the entries it invalidates, under the current generations ``gens`` (by tag)."""
    found: list[str] = []
    for kind in KINDS.invalidated_by(change):
        if kind.storage is Storage.RECORD and member_id is not None:
            found.append(kind.key(keys, [int(member_id)]))
        elif kind.storage is Storage.ENTRY:
            kind_gens = [gens[tag] for tag in kind.tags]
            found.extend(
                kind.key(keys, params, kind_gens)
                for params in kind.variants
                if len(params) == len(kind.params)
            )
    return found


def invalidate(
    cache: CacheService,
    change: Change,
    member_id: int | None = None,
    lifetimes: Lifetimes | None = None,
) -> tuple[list[str], tuple[str, ...], int]:
    """Retire what ``change`` touches: (keys deleted, tags bumped, keys that held an entry).

    Raises CacheUnavailable when Redis did not take it (the step waits in the outbox). With
    ``lifetimes``, the ages read beforehand are recorded once the delete went through.
    """
    tags = KINDS.tags_for(change)
    gens = generations_sync(cache, tags)
    if gens is None:
        bump_sync(cache, tags)  # queued in the outbox: replayed by this process, and retried
        raise CacheUnavailable("redis unavailable; the generations could not be read")
    keys = affected_keys(cache.keys, change, dict(zip(tags, gens, strict=True)), member_id)
    ages = read_ages(cache, keys)
    if not bump_sync(cache, tags, drop=keys) or len(cache.core.outbox):
        raise CacheUnavailable(
            f"redis unavailable; {len(cache.core.outbox)} invalidations pending replay"
        )
    if lifetimes is not None:
        record_invalidations(lifetimes, cache.keys, keys, ages)
    return keys, tags, sum(age is not None for age in ages)


def _answer(keys: Sequence[str], tags: Sequence[str], removed: int) -> dict[str, Any]:
    return {"keys": list(keys), "tags": list(tags), "removed": removed}


@shared_task(bind=True, **routing.task_options(routing.ON_MEMBER_CHANGE, retry_on=RETRY_ON))
def on_member_change(self: Task[Any, Any], action: str, member_id: int) -> dict[str, Any]:
    change = member_change(action)
    runtime = runtime_of(self)
    member = int(member_id)
    return _answer(*invalidate(runtime.cache, change, member, runtime.lifetimes))


@shared_task(bind=True, **routing.task_options(routing.ON_BULK_OPERATION, retry_on=RETRY_ON))
def on_bulk_operation(self: Task[Any, Any], kind: str, affected_count: int) -> dict[str, Any]:
    change = bulk_change(kind, affected_count)
    if change is None:
        return _answer([], [], 0)
    runtime = runtime_of(self)
    return _answer(*invalidate(runtime.cache, change, None, runtime.lifetimes))
