"""The worker entry point (``celery -A workers.app worker``) on the real broker.

What the worker refuses matters as much as what it runs: pickle never reaches a task, and no
queue comes into being by a typo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery.exceptions import QueueNotFound

from tests.workers import harness
from workers import routing
from workers.factory import create_app

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling this creates a file: the proof that a worker deserialized pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_worker_consumes_exactly_the_five_queues(stack: harness.Stack) -> None:
    hostname = stack.worker.name.replace("%h", os.uname().nodename)
    active = stack.client.app.control.inspect(destination=[hostname], timeout=2).active_queues()
    assert active is not None
    assert sorted(queue["name"] for queue in active[hostname]) == sorted(routing.QUEUES)


def test_pickle_message_is_refused_and_never_executed(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    marker = stack.directory / f"unpickled-{uuid.uuid4().hex}"
    before = stack.worker.log().count("ContentDisallowed")
    # A well-formed task message (a real task name, on its own queue) with a pickled body.
    sent = stack.client.app.send_task(
        routing.WARMUP_MEMBERS.name,
        args=[[1, 2, 3], Payload(marker)],
        queue=routing.Q_WARMUP,
        serializer="pickle",
    )
    harness.wait_for(
        lambda: stack.worker.log().count("ContentDisallowed") > before,
        20,
        "the worker to refuse the message",
    )
    log = stack.worker.log()
    assert "Refusing to deserialize untrusted content of type pickle" in log
    assert not marker.exists()  # the body was never unpickled
    assert stack.client.progress(sent.id).state == "PENDING"  # the task never ran
    assert not stack.cache_keys()  # ... and warmed nothing
    # The message is gone (acknowledged and dropped), not redelivered in a loop.
    assert stack.queue_length(routing.Q_WARMUP) == 0
    assert not stack.broker.hlen("unacked")
    # The worker is still healthy: the same task as JSON runs.
    done = stack.wait(stack.client.enqueue_warmup("members", [1, 2, 3]))
    assert done.state == "SUCCESS" and done.result["written"] == 3


def test_undeclared_queue_is_refused_at_send(stack: harness.Stack) -> None:
    before = set(stack.broker.scan_iter(count=1000))
    with pytest.raises(QueueNotFound):
        stack.client.app.send_task(routing.WARMUP_ALL.name, queue="cache.warmpu")
    # A route to an undeclared queue is refused the same way, for any task name.
    app = create_app(stack.settings)
    try:
        app.conf.task_routes = {"tasks.typo": {"queue": "cache.warmpu"}}
        with pytest.raises(QueueNotFound):
            app.send_task("tasks.typo")
    finally:
        app.close()
    after = set(stack.broker.scan_iter(count=1000))
    assert not {key for key in after - before if b"warmpu" in key}


def test_worker_refuses_to_consume_an_undeclared_queue(stack: harness.Stack) -> None:
    worker = harness.WorkerProcess(stack.env, stack.directory, queues=("cache.warmpu",))
    worker.start()
    try:
        code = worker.wait_exit(timeout=60)
    finally:
        worker.stop()
    assert code != 0
    log = worker.log()
    assert "ImproperlyConfigured" in log and "'cache.warmpu' isn't" in log
    assert not stack.broker.exists("cache.warmpu")


def test_app_module_builds_the_singleton_from_the_environment() -> None:
    """``workers.app`` is importable on its own and configured from Settings."""
    code = (
        "from workers.app import app; from workers.runtime import CacheCelery;"
        "assert isinstance(app, CacheCelery);"
        "assert app.conf.accept_content == ['json'];"
        "assert app.conf.broker_url == 'redis://127.0.0.1:6379/11', app.conf.broker_url;"
        "assert app.settings.redis_key_prefix == 'probe:'"
    )
    env = {
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/11",
        "REDIS_KEY_PREFIX": "probe:",
        "PYTHONPATH": str(harness.REPO),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=harness.REPO.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
