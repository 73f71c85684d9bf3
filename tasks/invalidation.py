"""Invalidation tasks (queue cache.invalidate): the Python side of CacheInvalidationHooks.

What a change touches is declared per kind (cache.kinds, ``invalidated_by``) and decided here
by a pure function over Keys and the tags' generations::

    a member created, updated or deleted  -> its record + the current entries of every kind
                                             it invalidates, and a bump of their tags
    a bulk operation (import, update, delete) of N members -> the current entries of every
                                             kind it invalidates, and a bump of their tags;
                                             with their ids, the N member records too

A bump moves every reader to new keys at once (the API and the warm-up fold the generations
into their keys, ``Kind.key``), whatever the number of entries: list pages and aggregates
retire together. The current entries are deleted in the same pipelined step only to free
their memory early and to record their age for the weekly TTL review (tasks/lifetimes.py):
the task reads the generations, then each entry's header (one pipelined GETRANGE), then
bumps and deletes (cache.invalidation.bump_sync): three round trips whatever the count, the
member records of a bulk operation included (they go in the bump's UNLINK).

A bulk operation names at most routing.MAX_IDS members per message; the task client splits
a longer list into several messages (workers/client.py), each a complete bulk operation.

A step that cannot reach Redis is queued by the cache service and the task raises
CacheUnavailable, so Celery retries it with backoff and jitter: the broker holds the message
until a retry succeeds, which makes the queue itself the durable outbox for these hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from celery import Task, shared_task

from cache import CacheService, Keys
from cache.errors import CacheUnavailable
from cache.invalidation import bump_sync, generations_sync
from cache.kinds import KINDS, Change, Storage
from tasks.lifetimes import Lifetimes, read_ages, record_invalidations
from tasks.runtime import runtime_of
from workers import routing
from workers.routing import BULK_KINDS, MAX_IDS, MEMBER_ACTIONS

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


def member_ids_of(values: Iterable[object] | None) -> list[int]:
    """The member ids of one message: positive integers, at most MAX_IDS, duplicates dropped
    (order kept); ValueError naming the first bad one."""
    found: dict[int, None] = {}
    for value in values or ():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"member id must be a positive integer, got {value!r}")
        found[value] = None
    if len(found) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} member ids per message, got {len(found)}")
    return list(found)


def affected_keys(
    keys: Keys, change: Change, gens: Mapping[str, int], member_ids: Iterable[int] = ()
) -> list[str]:
    """The cached keys ``change`` retires now: the records of ``member_ids`` and every
    variant of the entries it invalidates, under the current generations ``gens`` (by tag)."""
    ids = member_ids_of(member_ids)
    found: list[str] = []
    for kind in KINDS.invalidated_by(change):
        if kind.storage is Storage.RECORD:
            found.extend(kind.key(keys, [member_id]) for member_id in ids)
        elif kind.storage is Storage.ENTRY:
            found.extend(kind.variant_keys(keys, gens))
    return found


def invalidate(
    cache: CacheService,
    change: Change,
    member_ids: Iterable[int] = (),
    lifetimes: Lifetimes | None = None,
) -> tuple[list[str], tuple[str, ...], int]:
    """Retire what ``change`` touches, the records of ``member_ids`` included: (keys
    deleted, tags bumped, keys that held an entry). Three round trips whatever the count.

    Raises CacheUnavailable when Redis did not take it (the step waits in the outbox). With
    ``lifetimes``, the ages read beforehand are recorded once the delete went through.
    """
    tags = KINDS.tags_for(change)
    gens = generations_sync(cache, tags)
    if gens is None:
        bump_sync(cache, tags)  # queued in the outbox: replayed by this process, and retried
        raise CacheUnavailable("redis unavailable; the generations could not be read")
    keys = affected_keys(cache.keys, change, dict(zip(tags, gens, strict=True)), member_ids)
    ages = read_ages(cache, keys)
    if not bump_sync(cache, tags, drop=keys) or cache.outbox_pending:
        raise CacheUnavailable(
            f"redis unavailable; {cache.outbox_pending} invalidations pending replay"
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
    return _answer(*invalidate(runtime.cache, change, [member], runtime.lifetimes))


@shared_task(bind=True, **routing.task_options(routing.ON_BULK_OPERATION, retry_on=RETRY_ON))
def on_bulk_operation(
    self: Task[Any, Any],
    kind: str,
    affected_count: int,
    member_ids: list[int] | None = None,
) -> dict[str, Any]:
    """After a bulk import, update or delete: the aggregates, and the records of
    ``member_ids`` (at most MAX_IDS; the client sends one message per chunk)."""
    change = bulk_change(kind, affected_count)
    ids = member_ids_of(member_ids)
    if change is None:
        if ids:
            raise ValueError("member ids go with a bulk operation that touched members")
        return _answer([], [], 0)
    runtime = runtime_of(self)
    answer = _answer(*invalidate(runtime.cache, change, ids, runtime.lifetimes))
    services = runtime.worker.services
    services.consistency.record(services.redis("durable"), change, ((i, None) for i in ids))
    return answer
