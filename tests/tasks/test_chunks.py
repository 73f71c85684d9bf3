"""A warm-up of every member split into chunk tasks (tasks/chunks.py) on a real worker:
one task id to follow, progress summed across chunks, one warm-up at a time."""

from __future__ import annotations

import pytest

from tasks.warming import aggregate_count, member_chunks
from tests.workers.conftest import PG_MEMBERS, FollowTask, InProcess
from workers import routing, warmstate
from workers.scheduler import LeaderLease

CHUNK = 30  # 200 members: 7 chunks


@pytest.fixture
def task_env(task_env: dict[str, str]) -> dict[str, str]:
    return {**task_env, "CACHE_WARMUP_CHUNK_SIZE": str(CHUNK)}


def test_chunks_cover_the_ids_once_and_leave_the_last_open() -> None:
    assert member_chunks((1, 200), 30) == [
        *((after, after + 30) for after in range(0, 180, 30)),
        (180, None),
    ]
    assert member_chunks((5, 5), 30) == [(4, None)]
    assert member_chunks(None, 30) == [(0, None)]


def test_a_split_warmup_is_followed_as_one_task(
    worker: InProcess, published_states: FollowTask
) -> None:
    task_id, states = published_states(lambda: worker.client.enqueue_warmup("all"))
    everything = PG_MEMBERS + aggregate_count()
    progress = [meta for state, meta in states if state == "PROGRESS"]
    assert progress[0] == {"done": 0, "total": everything, "chunks": 7}
    # Each chunk reports the sum after its pages (chunks run side by side, so two reports
    # may land out of order): a report per chunk at least, the last sum is every member.
    done = [meta["done"] for meta in progress[1:]]
    assert len(done) >= 7 and max(done) == PG_MEMBERS and all(0 < d <= PG_MEMBERS for d in done)
    assert states[-1][0] == "SUCCESS"
    result = worker.wait(task_id).result or {}
    assert (result["chunks"], result["written"], result["missing"]) == (7, everything, 0)
    assert result["duty"] == 1.0  # asked for by an operator: not paced
    assert (result["done"], result["total"]) == (everything, everything)
    keys = worker.cache_keys()
    assert len([k for k in keys if ":member:" in k]) == PG_MEMBERS
    assert len([k for k in keys if ":gen:" not in k]) == everything

    # The lease is released and the run recorded as the last warm-up.
    durable = worker.cache.clients.writer
    keys_of = worker.cache.keys
    assert durable.get(warmstate.lease_key(keys_of)) is None
    last = warmstate.decoded(durable.get(warmstate.last_key(keys_of)))
    assert last is not None and last["task_id"] == task_id and last["result"] == result
    assert durable.exists(warmstate.run_key(keys_of, task_id)) == 0


def test_one_warmup_at_a_time_across_workers(worker: InProcess) -> None:
    durable = worker.cache.clients.writer
    other = {"task_id": "auto-1", "reason": "worker-start", "worker": "w2", "started_at": 1.0}
    running = LeaderLease(
        durable, warmstate.lease_key(worker.cache.keys), 30, token=warmstate.encoded(other)
    )
    assert running.hold()
    try:
        progress = worker.run(routing.WARMUP_DATA_TYPE, "member")
    finally:
        running.release()
    assert progress.state == "SUCCESS"
    assert progress.result == {"warmed": False, "skipped": "running", "by": other}
    assert not worker.cache_keys()
