"""Invalidation hooks: which keys a change touches (pure), and that a worker deletes exactly
those (real worker, real Redis)."""

from __future__ import annotations

import pytest

from cache import CacheService, DataType, Keys
from cache.errors import CacheUnavailable
from config import Settings
from tasks.invalidation import (
    bulk_operation_keys,
    invalidate,
    member_aggregate_keys,
    member_change_keys,
)
from tests.workers import harness

KEYS = Keys("p:")


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_member_change_touches_the_member_and_the_member_aggregates(action: str) -> None:
    assert member_change_keys(KEYS, action, 42) == [
        "p:member:42",
        "p:analytics:dashboard",
        "p:statistics:demographics",
    ]


def test_bulk_operation_touches_the_aggregates_once_whatever_the_count() -> None:
    assert bulk_operation_keys(KEYS, "import", 100_000) == member_aggregate_keys(KEYS)
    assert bulk_operation_keys(KEYS, "delete", 1) == member_aggregate_keys(KEYS)
    assert bulk_operation_keys(KEYS, "update", 0) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda: member_change_keys(KEYS, "upsert", 1),
        lambda: member_change_keys(KEYS, "update", "1*"),
        lambda: bulk_operation_keys(KEYS, "merge", 1),
        lambda: bulk_operation_keys(KEYS, "import", -1),
    ],
)
def test_bad_input_is_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_invalidate_raises_when_redis_did_not_take_it(unit_settings: Settings) -> None:
    from cache import build_cache

    down = build_cache(unit_settings.model_copy(update={"redis_port": 1}))
    try:
        with pytest.raises(CacheUnavailable):
            invalidate(down, member_change_keys(down.keys, "update", 1))
        assert len(down.core.outbox) == 6  # kept for replay by this process, and retried
    finally:
        down.close()


def _fill(cache: CacheService) -> dict[str, str]:
    keys = cache.keys
    values = {
        keys.member(1): DataType.MEMBER,
        keys.member(2): DataType.MEMBER,
        keys.member(11): DataType.MEMBER,
        keys.analytics("dashboard"): DataType.ANALYTICS,
        keys.analytics("dashboard", "2025"): DataType.ANALYTICS,  # not a cached name today
        keys.statistics("demographics"): DataType.STATISTICS,
        keys.lookup("tiers"): DataType.LOOKUP,
        keys.lookup("countries"): DataType.LOOKUP,
    }
    for key, data_type in values.items():
        assert cache.set(key, {"k": key}, data_type)
    return {key: data_type.value for key, data_type in values.items()}


@pytest.mark.slow
def test_on_member_change_deletes_exactly_the_member_and_aggregate_keys(
    clean_stack: harness.Stack,
) -> None:
    stack = clean_stack
    keys = stack.cache.keys
    generations = [keys.generation(tag) for tag in ("analytics", "statistics", "members")]
    for key in generations:
        stack.cache.clients.writer.set(key, 7)  # as the API's reads leave them
    filled = set(_fill(stack.cache)) | set(generations)
    before = stack.cache_keys()
    assert before == filled

    progress = stack.wait(stack.client.enqueue_member_change("update", 1))
    assert progress.state == "SUCCESS", progress.error
    removed = {keys.member(1), keys.analytics("dashboard"), keys.statistics("demographics")}
    assert before - stack.cache_keys() == removed
    assert stack.cache_keys() == before - removed
    assert progress.result == {
        "keys": [keys.member(1), keys.analytics("dashboard"), keys.statistics("demographics")],
        "tags": ["analytics", "statistics", "members"],
        "removed": 3,
    }
    # The API's responses derived from members retire: their generations moved on.
    assert stack.cache.clients.writer.mget(generations) == [b"8", b"8", b"8"]

    # Again: nothing left to delete, still a success (a redelivered hook is harmless).
    again = stack.wait(stack.client.enqueue_member_change("update", 1))
    assert again.state == "SUCCESS" and again.result["removed"] == 0
    assert stack.cache_keys() == before - removed


@pytest.mark.slow
def test_on_bulk_operation_deletes_only_the_aggregates(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    keys = stack.cache.keys
    before = set(_fill(stack.cache))
    progress = stack.wait(stack.client.enqueue_bulk_operation("import", 50_000))
    assert progress.state == "SUCCESS", progress.error
    assert before - stack.cache_keys() == {
        keys.analytics("dashboard"),
        keys.statistics("demographics"),
    }
