"""A bulk operation through ``on_bulk_operation`` with the members' ids: their records go with
the aggregates, in the bump's one pipelined step, whatever their number.

The worker runs in this process (celery_worker); its cache lives on a redis-server of this
module's own, away from the broker and the results, so the server's command statistics count
exactly what the cache was sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache.invalidation import generations_sync
from cache.kinds import KINDS, Change
from tests.support.redis_procs import RedisProcess, start_redis
from tests.tasks.test_invalidation import current_keys
from tests.workers import services
from tests.workers.conftest import PG_MEMBERS, InProcess
from workers import routing

AGGREGATES = ("dashboard", "growth", "demographics")


@pytest.fixture(scope="module")
def cache_redis() -> Iterator[RedisProcess]:
    with start_redis() as proc:
        yield proc


@pytest.fixture
def task_env(
    task_redis: RedisProcess, cache_redis: RedisProcess, pg_database: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """tests/workers/conftest.py's environment, with the cache on ``cache_redis``."""
    prefix = f"test-task-{uuid.uuid4().hex[:8]}:"
    env = services.stack_env(prefix, task_redis.port, pg_database, BACKUP_DIR=str(tmp_path))
    yield env | {"REDIS_PORT": str(cache_redis.port), "REDIS_DB": "0"}
    client = cache_redis.client()
    try:
        client.flushdb()  # this module's own server
    finally:
        client.close()


def commands(proc: RedisProcess) -> dict[str, int]:
    client = proc.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def test_a_bulk_update_with_ids_removes_exactly_those_records_and_the_aggregates(
    worker: InProcess, cache_redis: RedisProcess
) -> None:
    keys = worker.cache.keys
    warmed = list(range(1, PG_MEMBERS + 1))
    for task_id in (
        worker.client.enqueue_warmup("critical"),
        worker.client.enqueue_warmup("members", warmed),
    ):
        progress = worker.wait(task_id)
        assert progress.state == "SUCCESS", progress.error
    before = worker.cache_keys()
    aggregates = current_keys(worker, *AGGREGATES)
    assert aggregates <= before and set(keys.members(warmed)) <= before
    tags = KINDS.tags_for(Change.BULK_UPDATE)
    gens = generations_sync(worker.cache, tags)
    assert gens is not None

    changed = warmed[::3]  # 67 of the 200
    sent_before = commands(cache_redis)
    (task_id,) = worker.client.enqueue_bulk_operation("update", len(changed), changed)
    progress = worker.wait(task_id)
    assert progress.state == "SUCCESS", progress.error
    sent = {name: n - sent_before.get(name, 0) for name, n in commands(cache_redis).items()}

    removed = set(keys.members(changed)) | aggregates
    assert before - worker.cache_keys() == removed
    assert progress.result["removed"] == len(removed)
    assert generations_sync(worker.cache, tags) == tuple(gen + 1 for gen in gens)
    assert current_keys(worker, "lookup") <= worker.cache_keys(), "lookups do not depend on members"
    # Round trips, whatever the number of ids: one MGET of the generations, one pipeline of
    # GETRANGE (the entries' ages), and one pipeline of SET NX + INCR per tag and a single
    # UNLINK of every record, aggregate and lease.
    assert sent.get("mget") == 1, sent
    assert sent.get("getrange") == len(removed), sent
    assert sent.get("incr", 0) + sent.get("incrby", 0) == len(tags), sent
    assert sent.get("unlink") == 1, sent
    assert not sent.get("del"), sent


def test_more_ids_than_a_message_holds_go_in_several_messages(worker: InProcess) -> None:
    keys = worker.cache.keys
    progress = worker.wait(worker.client.enqueue_warmup("members", [1, 2, 3]))
    assert progress.state == "SUCCESS", progress.error
    ids = [*range(1, 3 * routing.MAX_IDS // 2)]  # 1.5 messages' worth: members 1..14,999
    task_ids = worker.client.enqueue_bulk_operation("delete", len(ids), ids)
    assert len(task_ids) == 2
    results = [worker.wait(task_id) for task_id in task_ids]
    assert [r.state for r in results] == ["SUCCESS", "SUCCESS"], [r.error for r in results]
    assert sum(len(r.result["keys"]) for r in results) == len(ids) + 2 * len(AGGREGATES)
    assert not any(worker.cache.clients.writer.exists(k) for k in keys.members([1, 2, 3]))


def test_the_task_refuses_bad_ids_and_deletes_nothing(worker: InProcess) -> None:
    keys = worker.cache.keys
    progress = worker.wait(worker.client.enqueue_warmup("members", [1, 2]))
    assert progress.state == "SUCCESS", progress.error
    for bad in ([1, 0], [1, "2"], list(range(1, routing.MAX_IDS + 2))):
        refused = worker.run(routing.ON_BULK_OPERATION, "update", 2, bad)
        assert refused.state == "FAILURE" and "ValueError" in (refused.error or "")
    refused = worker.run(routing.ON_BULK_OPERATION, "update", 0, [1])
    assert refused.state == "FAILURE" and "ValueError" in (refused.error or "")
    assert worker.cache.clients.writer.exists(*keys.members([1, 2])) == 2
