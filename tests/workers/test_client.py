"""workers/client.py: enqueue by name, read progress; end to end through a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from sqlalchemy import Engine

from cache import MISS, DataType
from config import Settings
from db import get_member, session_factory
from services import Services
from tasks.runtime import SOURCE
from tasks.sources import MemberRow, SqlSource
from tasks.warming import aggregate_count
from tests.support.redis_procs import RedisProcess
from tests.workers import harness, services
from tests.workers.conftest import PG_MEMBERS, InProcess
from workers import routing
from workers.client import TaskClient
from workers.runtime import CacheCelery


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
    for ids in ([], [1, 0], [1, "2"], [True]):
        with pytest.raises(ValueError):
            offline_client.enqueue_bulk_operation("update", 2, ids)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # nothing touched: no members to name
        offline_client.enqueue_bulk_operation("update", 0, [1])


@pytest.mark.parametrize(
    ("kind", "ids", "done"),
    [
        ("members", [1, 2, 3, 999_999], 4),
        ("lookup", None, aggregate_count(DataType.LOOKUP)),
        ("analytics", None, aggregate_count(DataType.ANALYTICS)),
        ("statistics", None, aggregate_count(DataType.STATISTICS)),
        ("all", None, PG_MEMBERS + aggregate_count()),
        ("critical", None, None),
    ],
)
def test_enqueue_warmup_runs_on_a_worker(
    worker: InProcess, kind: str, ids: list[int] | None, done: int | None
) -> None:
    progress = worker.wait(worker.client.enqueue_warmup(kind, ids))
    assert progress.state == "SUCCESS", progress.error
    assert progress.done == progress.total and progress.fraction == 1.0
    if done is not None:
        assert progress.done == done
    # Every key written is an entry; the tags' generation counters are read, not warmed.
    entries = {key for key in worker.cache_keys() if ":gen:" not in key}
    assert progress.result["written"] == len(entries) > 0


def test_each_enqueue_lands_on_its_queue(
    celery_app: CacheCelery, task_settings: Settings, task_redis: RedisProcess
) -> None:
    """Sent with no worker consuming: every message is on its task's queue, JSON encoded;
    a worker started afterwards drains them."""
    client = TaskClient(task_settings, app=celery_app)
    warmup = client.enqueue_warmup("critical")
    change = client.enqueue_member_change("delete", 5)
    (bulk,) = client.enqueue_bulk_operation("import", 100)
    expected = {routing.Q_WARMUP: {warmup}, routing.Q_INVALIDATE: {change, bulk}}
    broker = task_redis.client(db=services.BROKER_DB)
    try:
        for queue in routing.QUEUES:
            messages = [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
            assert {m["headers"]["id"] for m in messages} == expected.get(queue, set())
            assert all(m["content-type"] == "application/json" for m in messages)
    finally:
        broker.close()
    with start_worker(celery_app, pool="threads", concurrency=2):
        for task_id in (warmup, change, bulk):
            assert harness.final(client, task_id, 20).state == "SUCCESS"


class SlowSource(SqlSource):
    """Member pages of PAGE members, each read after a pause: a warm-up that takes a while."""

    PAGE, PAUSE = 20, 0.05

    @classmethod
    def build(cls, services: Services) -> SlowSource:
        return cls(services.engine)

    def member_pages(
        self, size: int, *, after: int = 0, upto: int | None = None
    ) -> Iterator[list[MemberRow]]:
        for page in super().member_pages(self.PAGE, after=after, upto=upto):
            time.sleep(self.PAUSE)
            yield page


@pytest.mark.parametrize("celery_parts", [{SOURCE: SlowSource.build}])
def test_progress_reads_the_backend_without_waiting(worker: InProcess) -> None:
    """PENDING for an unknown id; PROGRESS with done/total while a warm-up runs; the error of
    a task that failed. Each a single read of the backend."""
    unknown = str(uuid.uuid4())
    assert worker.client.progress(unknown).state == "PENDING"
    assert not worker.client.progress(unknown).ready

    running = worker.client.enqueue_warmup("all")
    seen = harness.wait_for(
        lambda: (
            (p := worker.client.progress(running)).state == "PROGRESS"
            and 0 < (p.done or 0) < PG_MEMBERS
            and p
        ),
        20,
        "the warm-up's progress",
        poll=0.01,
    )
    assert seen.total == PG_MEMBERS and not seen.ready
    assert seen.fraction == (seen.done or 0) / PG_MEMBERS
    assert worker.wait(running).state == "SUCCESS"

    failed = worker.client.send(routing.WARMUP_DATA_TYPE, "no-such-type")
    progress = worker.wait(failed)
    assert progress.ready and (progress.error or "").startswith("ValueError: ")


def test_warmed_values_are_what_the_read_path_would_store(
    worker: InProcess, pg_engine: Engine
) -> None:
    assert worker.wait(worker.client.enqueue_warmup("members", [7])).state == "SUCCESS"
    with session_factory(pg_engine)() as session:
        expected = get_member(session, 7)
    assert worker.cache.get(worker.cache.keys.member(7), DataType.MEMBER) == expected
    assert worker.cache.get(worker.cache.keys.member(8), DataType.MEMBER) is MISS


def test_client_imports_no_task_or_data_code(
    worker: InProcess, task_env: dict[str, str], tmp_path: Path
) -> None:
    """An app (the API, cachectl) enqueues by name: no tasks/, db/ or SQLAlchemy import."""
    code = (
        "import sys\n"
        "from config import load_settings\n"
        "from workers.client import TaskClient\n"
        "client = TaskClient(load_settings(_env_file=None))\n"
        "print(*client.enqueue_bulk_operation('update', 0))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tasks', 'db', 'sqlalchemy')]\n"
        "assert not loaded, loaded\n"
        "assert 'workers.app' not in sys.modules\n"
    )
    env = {**os.environ, **task_env, "PYTHONPATH": str(harness.REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert worker.wait(done.stdout.strip()).state == "SUCCESS"
