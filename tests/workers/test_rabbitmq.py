"""RabbitMQ as the broker (CELERY_BROKER_URL=amqp://...): the routing table's queues are
quorum queues, publishing is confirmed, results stay on the durable Redis role."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from config import Settings
from tests.support import rabbitmq
from tests.support.redis_procs import RedisProcess
from tests.workers import harness, services
from workers import routing
from workers.client import TaskClient
from workers.runtime import CacheCelery

pytestmark = pytest.mark.parametrize("celery_broker", ["amqp"], indirect=True)


def test_each_enqueue_lands_on_its_quorum_queue(
    celery_app: CacheCelery, task_settings: Settings, task_redis: RedisProcess
) -> None:
    """Sent with no worker consuming: each message waits on its task's quorum queue (the
    confirms returned, so RabbitMQ holds them); a worker started afterwards drains them and
    the results are on the durable role's Redis."""
    client = TaskClient(task_settings, app=celery_app)
    warmup = client.enqueue_warmup("critical")
    change = client.enqueue_member_change("delete", 5)
    (bulk,) = client.enqueue_bulk_operation("import", 100)
    url = task_settings.celery_broker_url
    assert url is not None and url.startswith("amqp://")
    # The run's vhost may hold other tests' queues too (Celery's delayed-delivery queues
    # among them): every one is a durable quorum queue, these two among them.
    declared = rabbitmq.queues(url)
    assert {routing.Q_WARMUP, routing.Q_INVALIDATE} <= set(declared)
    assert {(q["type"], q["durable"]) for q in declared.values()} == {("quorum", True)}
    assert waiting(celery_app) == {routing.Q_WARMUP: 1, routing.Q_INVALIDATE: 2}
    with start_worker(
        celery_app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=30
    ):
        for task_id in (warmup, change, bulk):
            assert harness.final(client, task_id, 30).state == "SUCCESS"
    results = task_redis.client(db=services.RESULTS_DB)
    try:
        assert all(results.exists(f"celery-task-meta-{t}") for t in (warmup, change, bulk))
    finally:
        results.close()
    assert waiting(celery_app) == {routing.Q_WARMUP: 0, routing.Q_INVALIDATE: 0}


def waiting(app: CacheCelery) -> dict[str, int]:
    """Messages ready on the declared queues, as the broker counts them now (a passive
    declare; rabbitmqctl's figures lag by the statistics interval)."""
    counts = {}
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in (routing.Q_WARMUP, routing.Q_INVALIDATE):
            counts[name] = channel.queue_declare(name, passive=True).message_count
    return counts
