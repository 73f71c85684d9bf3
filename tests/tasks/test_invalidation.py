"""Invalidation hooks: which keys a change touches (pure), and that a worker deletes exactly
those (real worker, real Redis)."""

from __future__ import annotations

import pytest

from cache import Keys
from cache.errors import CacheUnavailable
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Change
from config import Settings
from tasks.invalidation import affected_keys, bulk_change, invalidate, member_change
from tests.workers.conftest import InProcess
from workers.publisher import read_published
from workers.routing import MAX_IDS

KEYS = Keys("p:")
GENS = {"analytics": 5, "statistics": 6, "members": 7}


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_member_change_touches_the_member_and_the_current_aggregates(action: str) -> None:
    assert affected_keys(KEYS, member_change(action), GENS, [42]) == [
        "p:member:42",
        "p:analytics:dashboard:5",
        "p:analytics:growth:5",
        "p:statistics:demographics:6",
    ]
    assert KINDS.tags_for(member_change(action)) == ("members", "analytics", "statistics")


def test_bulk_operation_touches_the_aggregates_once_whatever_the_count() -> None:
    for kind, count in [("import", 100_000), ("delete", 1), ("update", 3)]:
        change = bulk_change(kind, count)
        assert change is not None
        assert affected_keys(KEYS, change, GENS) == [
            "p:analytics:dashboard:5",
            "p:analytics:growth:5",
            "p:statistics:demographics:6",
        ]
    assert bulk_change("update", 0) is None


def test_a_bulk_operation_with_member_ids_touches_their_records_too() -> None:
    change = bulk_change("update", 3)
    assert change is not None
    assert affected_keys(KEYS, change, GENS, [3, 1, 3, 2]) == [
        "p:member:3",
        "p:member:1",
        "p:member:2",
        "p:analytics:dashboard:5",
        "p:analytics:growth:5",
        "p:statistics:demographics:6",
    ]
    assert len(affected_keys(KEYS, change, GENS, range(1, MAX_IDS + 1))) == MAX_IDS + 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: member_change("upsert"),
        lambda: affected_keys(KEYS, member_change("update"), GENS, ["1*"]),  # type: ignore[list-item]
        lambda: affected_keys(KEYS, member_change("update"), GENS, [0]),
        lambda: affected_keys(KEYS, member_change("update"), GENS, [True]),
        lambda: affected_keys(KEYS, member_change("update"), GENS, range(1, MAX_IDS + 2)),
        lambda: bulk_change("merge", 1),
        lambda: bulk_change("import", -1),
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
            invalidate(down, Change.UPDATE, [1])
        # The bumps are kept for replay by this process (and the task is retried).
        assert len(down.core.outbox) == len(KINDS.tags_for(Change.UPDATE))
    finally:
        down.close()


def _warm(worker: InProcess) -> set[str]:
    """What the real warm-ups write: the aggregates and lookups, and members 1, 2 and 11."""
    for task_id in (
        worker.client.enqueue_warmup("critical"),
        worker.client.enqueue_warmup("members", [1, 2, 11]),
    ):
        progress = worker.wait(task_id)
        assert progress.state == "SUCCESS", progress.error
    return worker.cache_keys()


def current_keys(worker: InProcess, *names: str) -> set[str]:
    """The keys the API reads now for these kinds (their tags' current generations)."""
    found = set()
    for name in names:
        kind = KINDS[name]
        gens = generations_sync(worker.cache, kind.tags)
        assert gens is not None
        found |= {kind.key(worker.cache.keys, params, gens) for params in kind.variants}
    return found


AGGREGATES = ("dashboard", "growth", "demographics")


def test_on_member_change_deletes_exactly_the_member_and_aggregate_keys(
    worker: InProcess,
) -> None:
    keys = worker.cache.keys
    before = _warm(worker)
    aggregates = current_keys(worker, *AGGREGATES)
    assert aggregates <= before and keys.member(1) in before
    tags = KINDS.tags_for(Change.UPDATE)
    gens = generations_sync(worker.cache, tags)
    assert gens is not None

    progress = worker.wait(worker.client.enqueue_member_change("update", 1))
    assert progress.state == "SUCCESS", progress.error
    removed = {keys.member(1)} | aggregates
    assert before - worker.cache_keys() == removed
    assert progress.result["removed"] == len(removed)
    assert set(progress.result["keys"]) == removed
    assert progress.result["tags"] == list(tags)
    # The API's responses derived from members retire: their generations moved on.
    assert generations_sync(worker.cache, tags) == tuple(gen + 1 for gen in gens)
    assert current_keys(worker, "lookup") <= worker.cache_keys(), "lookups do not depend on members"
    # The worker publishes the ages of what it removed, for the weekly TTL review.
    assert worker.runtime.publisher.publish()
    (published,) = read_published(worker.cache).values()
    lifetimes = published["lifetimes"]
    assert {name: row["invalidated"] for name, row in lifetimes.items()} == {
        "member": 1,
        "analytics": 2,
        "statistics": 1,
    }

    # Again: nothing left to delete, still a success (a redelivered hook is harmless).
    again = worker.wait(worker.client.enqueue_member_change("update", 1))
    assert again.state == "SUCCESS" and again.result["removed"] == 0


def test_on_bulk_operation_deletes_only_the_aggregates(worker: InProcess) -> None:
    before = _warm(worker)
    aggregates = current_keys(worker, *AGGREGATES)
    (task_id,) = worker.client.enqueue_bulk_operation("import", 50_000)
    progress = worker.wait(task_id)
    assert progress.state == "SUCCESS", progress.error
    assert before - worker.cache_keys() == aggregates
