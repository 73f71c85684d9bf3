"""Warm-up tasks on a real worker: progress while running, failures that are not retried."""

from __future__ import annotations

import json
import time

import pytest

from tests.workers import harness, services
from workers import routing

pytestmark = pytest.mark.slow


def test_progress_is_published_while_the_warmup_runs(clean_stack: harness.Stack) -> None:
    """The result backend announces PROGRESS (done/total) before SUCCESS, as Flower and the
    API's progress endpoint see it."""
    stack = clean_stack
    listener = stack.redis_proc.client(db=services.RESULTS_DB)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("celery-task-meta-*")  # pub/sub is server-wide: filtered by id below
    try:
        task_id = stack.client.enqueue_warmup("all")
        states: list[tuple[str, object]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not states or states[-1][0] != "SUCCESS"):
            message = pubsub.get_message(timeout=0.5)
            if message and message["channel"].decode().endswith(task_id):
                meta = json.loads(message["data"])
                states.append((meta["status"], meta["result"]))
    finally:
        pubsub.close()
        listener.close()
    names = [state for state, _ in states]
    assert names[0] == "STARTED" and names[-1] == "SUCCESS"
    progress = [meta for state, meta in states if state == "PROGRESS"]
    assert progress[0] == {"done": 0, "total": harness.MEMBERS}
    assert {"done": harness.MEMBERS, "total": harness.MEMBERS} in progress
    assert progress[-1] == {"done": harness.MEMBERS + 5, "total": harness.MEMBERS + 5}


def test_bad_input_fails_once_without_retries(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    sent = stack.client.app.send_task(
        routing.WARMUP_DATA_TYPE.name, args=["default"], queue=routing.Q_WARMUP
    )
    progress = stack.wait(sent.id)
    assert progress.state == "FAILURE"
    assert progress.error is not None and progress.error.startswith("ValueError")
    assert sent.retries in (0, None)
    assert not stack.cache_keys()


def test_too_many_ids_in_one_message_fail(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    sent = stack.client.app.send_task(
        routing.WARMUP_MEMBERS.name,
        args=[list(range(1, routing.MAX_IDS + 2))],
        queue=routing.Q_WARMUP,
    )
    progress = stack.wait(sent.id)
    assert progress.state == "FAILURE" and f"at most {routing.MAX_IDS}" in (progress.error or "")
