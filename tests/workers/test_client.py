"""workers/client.py: enqueue by name, read progress; end to end through a real worker."""

from __future__ import annotations

import uuid

import pytest

from cache import MISS, DataType
from tests.workers import harness
from workers import routing
from workers.client import TaskClient


@pytest.fixture
def offline_client(settings: object) -> TaskClient:
    # Validation happens before anything is sent: no worker, no broker connection needed.
    return TaskClient(settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "ids"),
    [
        ("everything", None),
        ("members", None),
        ("members", []),
        ("critical", [1]),
        ("members", [0]),
        ("members", [True]),
        ("members", ["7"]),
        ("members", list(range(1, routing.MAX_IDS + 2))),
    ],
)
def test_enqueue_warmup_refuses_bad_arguments(
    offline_client: TaskClient, kind: str, ids: list[object] | None
) -> None:
    with pytest.raises(ValueError):
        offline_client.enqueue_warmup(kind, ids)  # type: ignore[arg-type]


def test_enqueue_hooks_refuse_bad_arguments(offline_client: TaskClient) -> None:
    with pytest.raises(ValueError):
        offline_client.enqueue_member_change("upsert", 1)
    with pytest.raises(ValueError):
        offline_client.enqueue_member_change("update", -1)
    with pytest.raises(ValueError):
        offline_client.enqueue_bulk_operation("merge", 1)
    with pytest.raises(ValueError):
        offline_client.enqueue_bulk_operation("import", -5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "ids", "done"),
    [
        ("members", [1, 2, 3, 999_999], 4),
        ("lookup", None, 3),
        ("analytics", None, 1),
        ("statistics", None, 1),
        ("all", None, harness.MEMBERS + 5),
        ("critical", None, None),
    ],
)
def test_enqueue_warmup_runs_on_a_worker(
    clean_stack: harness.Stack, kind: str, ids: list[int] | None, done: int | None
) -> None:
    stack = clean_stack
    task_id = stack.client.enqueue_warmup(kind, ids)
    progress = stack.wait(task_id)
    assert progress.state == "SUCCESS", progress.error
    assert progress.done == progress.total and progress.fraction == 1.0
    if done is not None:
        assert progress.done == done
    assert progress.result["written"] == len(stack.cache_keys()) > 0


@pytest.mark.slow
def test_each_enqueue_lands_on_its_queue(stack: harness.Stack) -> None:
    """Sent with no worker consuming: every message is on its task's queue, JSON encoded."""
    import json

    stack.worker.stop()
    try:
        sent = {
            routing.Q_WARMUP: stack.client.enqueue_warmup("critical"),
            routing.Q_INVALIDATE: stack.client.enqueue_member_change("delete", 5),
        }
        bulk = stack.client.enqueue_bulk_operation("import", 100)
        for queue, task_id in sent.items():
            messages = [json.loads(raw) for raw in stack.broker.lrange(queue, 0, -1)]
            assert [m["headers"]["id"] for m in messages if m["headers"]["id"] == task_id]
            assert all(m["content-type"] == "application/json" for m in messages)
        assert bulk.encode() in b"".join(stack.broker.lrange(routing.Q_INVALIDATE, 0, -1))
    finally:
        stack.worker = harness.WorkerProcess(stack.env, stack.directory).start()
        stack.worker.wait_ready(stack.client)
    # The restarted worker drains what was queued meanwhile.
    for task_id in [*sent.values(), bulk]:
        assert stack.wait(task_id).state == "SUCCESS"


@pytest.mark.slow
def test_progress_reads_the_backend_without_waiting(stack: harness.Stack) -> None:
    unknown = str(uuid.uuid4())
    assert stack.client.progress(unknown).state == "PENDING"
    assert not stack.client.progress(unknown).ready

    running = str(uuid.uuid4())
    stack.client.app.backend.store_result(running, {"done": 5000, "total": 20000}, "PROGRESS")
    progress = stack.client.progress(running)
    assert (progress.state, progress.done, progress.total) == ("PROGRESS", 5000, 20000)
    assert progress.fraction == 0.25 and not progress.ready

    failed = str(uuid.uuid4())
    stack.client.app.backend.mark_as_failure(failed, ValueError("bad id"))
    progress = stack.client.progress(failed)
    assert progress.ready and progress.error == "ValueError: bad id"


@pytest.mark.slow
def test_warmed_values_are_what_the_read_path_would_store(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    assert stack.wait(stack.client.enqueue_warmup("members", [7])).state == "SUCCESS"
    from db import get_member, make_engine, session_factory

    engine = make_engine(stack.settings.database_url)
    try:
        with session_factory(engine)() as session:
            expected = get_member(session, 7)
    finally:
        engine.dispose()
    assert stack.cache.get(stack.cache.keys.member(7), DataType.MEMBER) == expected
    assert stack.cache.get(stack.cache.keys.member(8), DataType.MEMBER) is MISS


@pytest.mark.slow
def test_client_imports_no_task_or_data_code(stack: harness.Stack) -> None:
    """An app (the API, cachectl) enqueues by name: no tasks/, db/ or SQLAlchemy import."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from config import load_settings\n"
        "from workers.client import TaskClient\n"
        "client = TaskClient(load_settings(_env_file=None))\n"
        "print(client.enqueue_bulk_operation('update', 0))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tasks', 'db', 'sqlalchemy')]\n"
        "assert not loaded, loaded\n"
        "assert 'workers.app' not in sys.modules\n"
    )
    env = {**os.environ, **stack.env, "PYTHONPATH": str(harness.REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=stack.directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert stack.wait(done.stdout.strip()).state == "SUCCESS"
