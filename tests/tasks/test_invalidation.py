"""Invalidation hooks: which keys a change touches (pure), and that a worker deletes exactly
those (real worker, real Redis)."""

from __future__ import annotations

import pytest

from cache import Keys
from cache.errors import CacheUnavailable
from cache.invalidation import MEMBER_TAGS, generations_sync
from config import Settings
from tasks.invalidation import (
    bulk_operation_keys,
    invalidate,
    member_aggregate_keys,
    member_change_keys,
)
from tests.workers.conftest import InProcess
from workers.publisher import read_published

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


def test_invalidate_raises_when_redis_did_not_take_it(settings: Settings) -> None:
    from cache import build_cache

    down = build_cache(settings.model_copy(update={"redis_port": 1}))
    try:
        with pytest.raises(CacheUnavailable):
            invalidate(down, member_change_keys(down.keys, "update", 1))
        assert len(down.core.outbox) == 6  # kept for replay by this process, and retried
    finally:
        down.close()


def _warm(worker: InProcess) -> set[str]:
    """Members 1, 2 and 11, the lookups and the aggregates, written by the warm-ups (their
    producer), and the member tags' generations started as a reader starts them."""
    for task_id in (
        worker.client.enqueue_warmup("members", [1, 2, 11]),
        worker.client.enqueue_warmup("lookup"),
        worker.client.enqueue_warmup("analytics"),
        worker.client.enqueue_warmup("statistics"),
    ):
        assert worker.wait(task_id).state == "SUCCESS"
    assert generations_sync(worker.cache, MEMBER_TAGS) is not None
    keys = worker.cache.keys
    generations = {keys.generation(tag) for tag in MEMBER_TAGS}
    aggregates = {keys.analytics("dashboard"), keys.statistics("demographics")}
    members = {keys.member(1), keys.member(2), keys.member(11)}
    warmed = worker.cache_keys()
    assert members | aggregates | generations <= warmed
    assert any(key.startswith(keys.prefix + "lookup") for key in warmed)
    return warmed


def test_on_member_change_deletes_exactly_the_member_and_aggregate_keys(
    worker: InProcess,
) -> None:
    keys = worker.cache.keys
    before = _warm(worker)
    generations = generations_sync(worker.cache, MEMBER_TAGS)
    assert generations is not None

    progress = worker.wait(worker.client.enqueue_member_change("update", 1))
    assert progress.state == "SUCCESS", progress.error
    removed = {keys.member(1), keys.analytics("dashboard"), keys.statistics("demographics")}
    assert before - worker.cache_keys() == removed
    assert worker.cache_keys() == before - removed
    assert progress.result == {
        "keys": [keys.member(1), keys.analytics("dashboard"), keys.statistics("demographics")],
        "tags": list(MEMBER_TAGS),
        "removed": 3,
    }
    # The API's responses derived from members retire: their generations moved on.
    assert generations_sync(worker.cache, MEMBER_TAGS) == tuple(g + 1 for g in generations)
    # The worker publishes the ages of what it removed, for the weekly TTL review.
    assert worker.runtime.publisher.publish()
    (published,) = read_published(worker.cache).values()
    lifetimes = published["lifetimes"]
    assert {name: row["invalidated"] for name, row in lifetimes.items()} == {
        "member": 1,
        "analytics": 1,
        "statistics": 1,
    }

    # Again: nothing left to delete, still a success (a redelivered hook is harmless).
    again = worker.wait(worker.client.enqueue_member_change("update", 1))
    assert again.state == "SUCCESS" and again.result["removed"] == 0
    assert worker.cache_keys() == before - removed


def test_on_bulk_operation_deletes_only_the_aggregates(worker: InProcess) -> None:
    keys = worker.cache.keys
    before = _warm(worker)
    progress = worker.wait(worker.client.enqueue_bulk_operation("import", 50_000))
    assert progress.state == "SUCCESS", progress.error
    assert before - worker.cache_keys() == {
        keys.analytics("dashboard"),
        keys.statistics("demographics"),
    }
