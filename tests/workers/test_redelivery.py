"""A worker SIGKILLed in the middle of a warm-up and an invalidation: another worker completes
both, and nothing is lost.

Late acknowledgement keeps each message in the broker's unacked set while its task runs; a
worker killed outright acknowledges nothing, so once the visibility timeout (shortened to a
few seconds here, CELERY_VISIBILITY_TIMEOUT) has passed, the next worker to sweep the set puts
the messages back on their queues. Both tasks are safe to repeat.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from cache import MISS, DataType, build_cache
from db import make_engine, session_factory, update_member
from tasks.warming import aggregate_count
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers import harness, services
from tests.workers.processes import WorkerProcess, wait_for
from workers import routing
from workers.client import TaskClient

pytestmark = [pytest.mark.slow, pytest.mark.fault]

VISIBILITY = 3


@pytest.fixture
def broker() -> Iterator[RedisProcess]:
    """A redis-server of this test's own: no other worker may take its messages."""
    with start_redis() as proc:
        yield proc


def test_killed_worker_s_warmup_and_invalidation_are_completed_by_another(
    stack: harness.Stack, broker: RedisProcess
) -> None:
    prefix = f"test-kill-{uuid.uuid4().hex[:8]}:"
    env = services.stack_env(
        prefix,
        broker.port,
        stack.database_url,
        CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY),
        SLOW_SECONDS="0.4",
        SLOW_INVALIDATION_SECONDS="30",  # still running when the warm-up is half done
    )
    settings = harness.settings_from_env(env)
    client, cache = TaskClient(settings), build_cache(settings)
    queues = (routing.Q_WARMUP, routing.Q_INVALIDATE)
    doomed = WorkerProcess(env, stack.directory, queues=queues, app="tests.workers.slow_app")
    rescuer = WorkerProcess(env, stack.directory, queues=queues)
    try:
        doomed.start()
        doomed.wait_ready(client)
        # Member 2 cached by a warm-up, then changed in the database: its entry is stale
        # until the invalidation of that change runs.
        assert harness.final(client, client.enqueue_warmup("members", [2])).state == "SUCCESS"
        stale = cache.keys.member(2)
        old = cache.get(stale, DataType.MEMBER)
        new_email = f"moved-{uuid.uuid4().hex[:8]}@example.org"
        engine = make_engine(stack.database_url)
        try:
            with session_factory(engine).begin() as session:
                assert update_member(session, 2, {"email": new_email}) is not None
        finally:
            engine.dispose()
        assert old["email"] != new_email
        warmup = client.enqueue_warmup("all")
        change = client.enqueue_member_change("update", 2)

        def mid_flight() -> bool:
            progress = client.progress(warmup)
            return (
                progress.state == "PROGRESS"
                and 0 < (progress.done or 0) < harness.MEMBERS
                and client.progress(change).state == "STARTED"
            )

        wait_for(mid_flight, 30, "the warm-up and the invalidation to be running")
        doomed.kill()
        unacked = broker.client(db=services.BROKER_DB).hlen("unacked")
        assert unacked == 2  # both messages are held, neither acknowledged nor lost
        assert cache.clients.writer.exists(stale)  # the invalidation had not happened

        time.sleep(VISIBILITY + 0.5)  # past the visibility timeout: a sweep restores them
        rescuer.start()
        rescuer.wait_ready(client)
        done = {task: harness.final(client, task) for task in (warmup, change)}
        assert done[warmup].state == done[change].state == "SUCCESS"
        # Every member and aggregate (the stack's database may hold members other tests added).
        result = done[warmup].result
        assert result["done"] == result["total"] >= harness.MEMBERS + aggregate_count()
        results = broker.client(db=services.RESULTS_DB)
        for task in (warmup, change):
            meta = json.loads(results.get(f"celery-task-meta-{task}") or b"{}")
            assert meta["worker"] == rescuer.hostname
        # Nothing lost: every member is cached, except that the invalidated one is either
        # gone or refilled fresh (the two tasks ran side by side), never the stale value.
        keys = cache.keys.members(range(1, harness.MEMBERS + 1))
        members = cache.get_many(keys, DataType.MEMBER)
        assert all(isinstance(m, dict) for n, m in enumerate(members, 1) if n != 2)
        assert members[1] is MISS or members[1]["email"] == new_email
        assert broker.client(db=services.BROKER_DB).hlen("unacked") == 0
    finally:
        doomed.stop()
        rescuer.stop()
        client.close()
        cache.close()


def test_on_rabbitmq_a_killed_worker_s_task_is_redelivered_to_another(
    stack: harness.Stack, broker: RedisProcess, rabbitmq_url: str
) -> None:
    """The same loss on RabbitMQ: the quorum queue hands the unacknowledged message back as
    soon as the dead worker's connection closes (no visibility timeout to wait out), and the
    result lands on the Redis of the durable role."""
    prefix = f"test-kill-amqp-{uuid.uuid4().hex[:8]}:"
    env = services.stack_env(
        prefix,
        broker.port,
        stack.database_url,
        CELERY_BROKER_URL=rabbitmq_url,
        SLOW_INVALIDATION_SECONDS="30",  # still running when the worker is killed
    )
    settings = harness.settings_from_env(env)
    client = TaskClient(settings)
    queues = (routing.Q_INVALIDATE,)
    doomed = WorkerProcess(env, stack.directory, queues=queues, app="tests.workers.slow_app")
    rescuer = WorkerProcess(env, stack.directory, queues=queues)
    try:
        doomed.start()
        doomed.wait_ready(client)
        change = client.enqueue_member_change("update", 3)
        wait_for(lambda: client.progress(change).state == "STARTED", 30, "the invalidation to run")
        doomed.kill()
        rescuer.start()
        rescuer.wait_ready(client)
        assert harness.final(client, change).state == "SUCCESS"
        results = broker.client(db=services.RESULTS_DB)
        meta = json.loads(results.get(f"celery-task-meta-{change}") or b"{}")
        assert meta["worker"] == rescuer.hostname
    finally:
        doomed.stop()
        rescuer.kill()  # its work is done; a warm shutdown on AMQP waits for its loop to wake
        client.close()
