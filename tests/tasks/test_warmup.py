"""Warm-up tasks on a real (in-process) worker: progress while running, failures that are not
retried."""

from __future__ import annotations

from tasks.warming import aggregate_count
from tests.workers.conftest import PG_MEMBERS, FollowTask, InProcess
from workers import routing


def test_progress_is_published_while_the_warmup_runs(
    worker: InProcess, published_states: FollowTask
) -> None:
    """The result backend announces PROGRESS (done/total) before SUCCESS, as Flower and the
    API's progress endpoint see it."""
    _, states = published_states(lambda: worker.client.enqueue_warmup("all"))
    names = [state for state, _ in states]
    assert names[0] == "STARTED" and names[-1] == "SUCCESS"
    progress = [meta for state, meta in states if state == "PROGRESS"]
    assert progress[0] == {"done": 0, "total": PG_MEMBERS}
    assert {"done": PG_MEMBERS, "total": PG_MEMBERS} in progress
    everything = PG_MEMBERS + aggregate_count()
    assert progress[-1] == {"done": everything, "total": everything}


def test_bad_input_fails_once_without_retries(worker: InProcess) -> None:
    task_id = worker.client.send(routing.WARMUP_DATA_TYPE, "default")
    progress = worker.wait(task_id)
    assert progress.state == "FAILURE"
    assert progress.error is not None and progress.error.startswith("ValueError")
    assert worker.app.AsyncResult(task_id).retries in (0, None)
    assert not worker.cache_keys()


def test_too_many_ids_in_one_message_fail(worker: InProcess) -> None:
    """The client refuses them; a producer that sends anyway gets a failure, not a warm-up."""
    progress = worker.run(routing.WARMUP_MEMBERS, list(range(1, routing.MAX_IDS + 2)))
    assert progress.state == "FAILURE" and f"at most {routing.MAX_IDS}" in (progress.error or "")
    assert not worker.cache_keys()
