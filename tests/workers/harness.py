"""A real Celery stack for tests: `celery -A workers.app worker` on a redis-server of its own.

The stack's redis-server (tests/workers/services.py) carries the broker (database 1), the
results (2) and the cache (0, under a prefix of the session's own); its data is a seeded
PostgreSQL database created for it. Everything is thrown away afterwards: the server is
killed and the database dropped, so nothing is cleaned key by key and two sessions (or
pytest-xdist workers) never share a queue. :func:`acquire` and :func:`release` count users
and the last release stops it.

The stack is for what needs real processes: fault and failover tests (a worker killed, two
beats), the entry point, Flower. Task behaviour runs on an in-process worker
(celery.contrib.pytest's celery_worker, tests/workers/conftest.py).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from cache import CacheService, build_cache
from config import Settings, load_settings
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers import services
from tests.workers.processes import REPO, WorkerProcess, wait_for
from workers.client import Progress, TaskClient

__all__ = ["REPO", "Stack", "WorkerProcess", "acquire", "release", "wait_for"]

MEMBERS = 30  # seeded members; ids 1..30


def unlink_matching(client: redis.Redis, patterns: Iterable[str]) -> int:
    removed = 0
    for pattern in patterns:
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 500):
            removed += int(client.unlink(*batch[start : start + 500]))
    return removed


def settings_from_env(env: dict[str, str]) -> Settings:
    return load_settings(**{name.lower(): value for name, value in env.items()}, _env_file=None)


@dataclass
class Stack:
    directory: Path
    prefix: str
    env: dict[str, str]
    settings: Settings
    client: TaskClient
    cache: CacheService
    redis_proc: RedisProcess
    broker: redis.Redis
    results: redis.Redis
    database: str
    worker: WorkerProcess

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def wait(self, task_id: str, timeout: float = 20.0) -> Progress:
        """Poll the result backend until the task is SUCCESS or FAILURE."""
        return wait_for(lambda: _final(self.client, task_id), timeout, f"task {task_id}")

    def cache_keys(self) -> set[str]:
        """The cache keys under the prefix, platform state (sys:) excluded."""
        system = self.prefix + "sys:"
        return {
            key.decode()
            for key in self.cache.clients.writer.scan_iter(match=self.prefix + "*", count=1000)
            if not key.startswith(system.encode())
        }

    def queue_length(self, queue: str) -> int:
        return int(self.broker.llen(queue))

    def clear_cache(self) -> None:
        unlink_matching(self.redis_proc.client(db=services.CACHE_DB), [self.prefix + "*"])

    def close(self) -> None:
        try:
            self.worker.stop()
        finally:
            self.client.close()
            self.cache.close()
            self.broker.close()
            self.results.close()
            self.redis_proc.close()
            services.drop_database(self.database)
            shutil.rmtree(self.directory, ignore_errors=True)


def _final(client: TaskClient, task_id: str) -> Progress | None:
    progress = client.progress(task_id)
    return progress if progress.ready else None


def final(client: TaskClient, task_id: str, timeout: float = 40.0) -> Progress:
    """Poll the result backend until the task is SUCCESS or FAILURE."""
    return wait_for(lambda: _final(client, task_id), timeout, f"task {task_id}")


_stack: Stack | None = None
_users = 0


def start_stack(directory: Path) -> Stack:
    prefix = f"test-celery-{uuid.uuid4().hex[:8]}:"
    proc = start_redis()
    try:
        database, url = services.create_database(MEMBERS)
    except BaseException:
        proc.close()
        raise
    env = services.stack_env(prefix, proc.port, url)
    settings = settings_from_env(env)
    client = TaskClient(settings)
    worker = WorkerProcess(env, directory)
    worker.start()
    stack = Stack(
        directory,
        prefix,
        env,
        settings,
        client,
        build_cache(settings),
        proc,
        proc.client(db=services.BROKER_DB),
        proc.client(db=services.RESULTS_DB),
        database,
        worker,
    )
    try:
        worker.wait_ready(client)
    except BaseException:
        stack.close()
        raise
    return stack


def acquire() -> Stack:
    global _stack, _users
    if _stack is None:
        _stack = start_stack(Path(tempfile.mkdtemp(prefix="test-celery-")))
    _users += 1
    return _stack


def release() -> None:
    global _stack, _users
    _users -= 1
    if _users or _stack is None:
        return
    try:
        _stack.close()
    finally:
        _stack = None
