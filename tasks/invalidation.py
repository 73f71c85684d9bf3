"""Invalidation tasks (queue cache.invalidate): the Python side of CacheInvalidationHooks.

What depends on what is decided here, by pure functions over Keys::

    a member created, updated or deleted  -> its member key + every member-derived aggregate
    a bulk operation (import, update, delete) of N members -> every member-derived aggregate

The member-derived aggregates are the analytics and statistics names of tasks/sources.py
(dashboard, demographics). Both hooks also bump the generations of
cache.invalidation.MEMBER_TAGS, which the API folds into its cached responses (list pages, the
dashboard): every response derived from members retires at once, whatever their number. The
deletes and the bumps are one pipelined step (cache.invalidation.bump_sync). Lookups do not
depend on members and are left alone.

Before deleting, the task reads the header of each entry (one pipelined GETRANGE) to record
its age at invalidation for the weekly TTL review (tasks/lifetimes.py).

A step that cannot reach Redis is queued by the cache service and the task raises
CacheUnavailable, so Celery retries it with backoff and jitter: the broker holds the message
until a retry succeeds, which makes the queue itself the durable outbox for these hooks.
"""

from __future__ import annotations

from typing import Any, Final

from celery import Task, shared_task

from cache import CacheService, Keys
from cache.errors import CacheUnavailable
from cache.invalidation import MEMBER_TAGS, bump_sync
from tasks.lifetimes import Lifetimes, read_ages, record_invalidations
from tasks.runtime import runtime_of
from tasks.sources import ANALYTICS_NAMES, STATISTICS_NAMES
from workers import routing
from workers.routing import BULK_KINDS, MEMBER_ACTIONS

RETRY_ON: Final = (CacheUnavailable,)


def member_aggregate_keys(keys: Keys) -> list[str]:
    """Every cached aggregate computed from the members table."""
    return [
        *(keys.analytics(name) for name in ANALYTICS_NAMES),
        *(keys.statistics(name) for name in STATISTICS_NAMES),
    ]


def member_change_keys(keys: Keys, action: str, member_id: int) -> list[str]:
    if action not in MEMBER_ACTIONS:
        raise ValueError(f"unknown member action {action!r}; expected one of {MEMBER_ACTIONS}")
    return [keys.member(int(member_id)), *member_aggregate_keys(keys)]


def bulk_operation_keys(keys: Keys, kind: str, affected_count: int) -> list[str]:
    if kind not in BULK_KINDS:
        raise ValueError(f"unknown bulk operation {kind!r}; expected one of {BULK_KINDS}")
    if int(affected_count) < 0:
        raise ValueError("affected_count must be >= 0")
    return member_aggregate_keys(keys) if int(affected_count) else []


def invalidate(
    cache: CacheService,
    keys: list[str],
    lifetimes: Lifetimes | None = None,
    tags: tuple[str, ...] = MEMBER_TAGS,
) -> int:
    """Delete ``keys`` and bump ``tags`` in one round trip; how many keys held an entry.

    Raises CacheUnavailable when Redis did not take it (the step waits in the outbox). With
    ``lifetimes``, the ages read beforehand are recorded once the delete went through.
    """
    ages = read_ages(cache, keys)
    if not bump_sync(cache, tags, drop=keys) or len(cache.core.outbox):
        raise CacheUnavailable(
            f"redis unavailable; {len(cache.core.outbox)} invalidations pending replay"
        )
    if lifetimes is not None:
        record_invalidations(lifetimes, cache.keys, keys, ages)
    return sum(age is not None for age in ages)


@shared_task(bind=True, **routing.task_options(routing.ON_MEMBER_CHANGE, retry_on=RETRY_ON))
def on_member_change(self: Task[Any, Any], action: str, member_id: int) -> dict[str, Any]:
    runtime = runtime_of(self)
    keys = member_change_keys(runtime.cache.keys, action, member_id)
    removed = invalidate(runtime.cache, keys, runtime.lifetimes)
    return {"keys": keys, "tags": list(MEMBER_TAGS), "removed": removed}


@shared_task(bind=True, **routing.task_options(routing.ON_BULK_OPERATION, retry_on=RETRY_ON))
def on_bulk_operation(self: Task[Any, Any], kind: str, affected_count: int) -> dict[str, Any]:
    runtime = runtime_of(self)
    keys = bulk_operation_keys(runtime.cache.keys, kind, affected_count)
    removed = invalidate(runtime.cache, keys, runtime.lifetimes) if keys else 0
    return {"keys": keys, "tags": list(MEMBER_TAGS) if keys else [], "removed": removed}
