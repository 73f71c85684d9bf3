"""A real Celery stack for tests: `celery -A workers.app worker` subprocesses on the shared Redis.

Broker on database 11, results on database 12, cache keys on database 11 under a prefix of the
session's own (``test-celery-<hex>:``), data in a tiny seeded SQLite file. Only keys these tests
create are removed afterwards (SCAN + UNLINK by pattern): never FLUSHDB or FLUSHALL.

The queues on database 11 have fixed names, so two test sessions on one machine would consume
each other's messages: a lock file serializes the sessions (and pytest-xdist workers) that
use this stack. One stack serves tests/workers and tests/tasks: :func:`acquire` and
:func:`release` count users and the last release stops the worker.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from cache import CacheService, build_cache
from config import Settings, load_settings
from workers import routing
from workers.client import Progress, TaskClient

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
PORT = 6379
BROKER_DB = 11
RESULTS_DB = 12
CACHE_DB = 11
MEMBERS = 30  # seeded members; ids 1..30
SEED_NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
LOCK_PATH = Path(tempfile.gettempdir()) / f"membership-cache-celery-db{BROKER_DB}.lock"
# Everything Celery and kombu write on the broker database for our queues.
BROKER_PATTERNS = (*routing.QUEUES, "_kombu.*", "unacked*", "*.reply.celery.pidbox")

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def unlink_matching(client: redis.Redis, patterns: Iterable[str]) -> int:
    removed = 0
    for pattern in patterns:
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 500):
            removed += int(client.unlink(*batch[start : start + 500]))
    return removed


def settings_env(prefix: str, database_url: str) -> dict[str, str]:
    """The environment of a worker process, and the Settings of the test process."""
    return {
        "REDIS_HOST": HOST,
        "REDIS_PORT": str(PORT),
        "REDIS_DB": str(CACHE_DB),
        "REDIS_KEY_PREFIX": prefix,
        "CELERY_BROKER_URL": f"redis://{HOST}:{PORT}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"redis://{HOST}:{PORT}/{RESULTS_DB}",
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
    }


def settings_from_env(env: dict[str, str]) -> Settings:
    return load_settings(**{name.lower(): value for name, value in env.items()}, _env_file=None)


def seed_database(directory: Path) -> str:
    """A migrated SQLite file with MEMBERS members, lookups and payments."""
    from db import make_engine, seed, upgrade

    url = f"sqlite:///{directory / 'members.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        seed(engine, MEMBERS, progress=False, now=SEED_NOW)
    finally:
        engine.dispose()
    return url


@dataclass
class WorkerProcess:
    """One ``celery -A workers.app worker`` subprocess, in its own session (process group)."""

    env: dict[str, str]
    cwd: Path
    queues: tuple[str, ...] = routing.QUEUES
    concurrency: int = 2
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}@%h")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.cwd / f"worker-{self.name.split('@')[0]}.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            ",".join(self.queues),
            "-c",
            str(self.concurrency),
            "-P",
            "prefork",
            "-n",
            self.name,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        with self.log_path.open("wb") as log:
            # cwd outside the repo: no .env is read, nothing is written into the tree.
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, client: TaskClient, timeout: float = 30.0) -> None:
        """Until the worker answers a control ping (``celery inspect ping``)."""
        hostname = self.name.replace("%h", os.uname().nodename)

        def answered() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            replies = client.app.control.ping(destination=[hostname], timeout=0.5)
            return any(hostname in reply for reply in replies)

        wait_for(answered, timeout, "the worker to answer a ping")

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the worker's process group if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Stack:
    directory: Path
    prefix: str
    env: dict[str, str]
    settings: Settings
    client: TaskClient
    cache: CacheService
    broker: redis.Redis
    results: redis.Redis
    worker: WorkerProcess

    def wait(self, task_id: str, timeout: float = 20.0) -> Progress:
        """Poll the result backend until the task is SUCCESS or FAILURE."""
        return wait_for(
            lambda: (p := self.client.progress(task_id)).ready and p, timeout, f"task {task_id}"
        )

    def cache_keys(self) -> set[str]:
        return {key.decode() for key in self.broker.scan_iter(match=self.prefix + "*", count=1000)}

    def queue_length(self, queue: str) -> int:
        return int(self.broker.llen(queue))

    def clear_cache(self) -> None:
        unlink_matching(self.broker, [self.prefix + "*"])

    def close(self) -> None:
        try:
            self.worker.stop()
        finally:
            self.client.close()
            self.cache.close()
            unlink_matching(self.broker, [self.prefix + "*", *BROKER_PATTERNS])
            unlink_matching(self.results, ["celery-task-meta-*"])
            self.broker.close()
            self.results.close()
            shutil.rmtree(self.directory, ignore_errors=True)


_stack: Stack | None = None
_users = 0
_lock_file: Any = None


def _take_lock(timeout: float = 600.0) -> Any:
    handle = LOCK_PATH.open("w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise TimeoutError(f"another test session holds {LOCK_PATH}") from None
            time.sleep(0.2)


def start_stack(directory: Path) -> Stack:
    prefix = f"test-celery-{uuid.uuid4().hex[:8]}:"
    env = settings_env(prefix, seed_database(directory))
    settings = settings_from_env(env)
    broker = redis.Redis(host=HOST, port=PORT, db=BROKER_DB)
    results = redis.Redis(host=HOST, port=PORT, db=RESULTS_DB)
    # Leftovers of a session that died hard: stale messages would run in this one.
    unlink_matching(broker, BROKER_PATTERNS)
    client = TaskClient(settings)
    worker = WorkerProcess(env, directory).start()
    stack = Stack(
        directory, prefix, env, settings, client, build_cache(settings), broker, results, worker
    )
    try:
        worker.wait_ready(client)
    except BaseException:
        stack.close()
        raise
    return stack


def acquire() -> Stack:
    global _stack, _users, _lock_file
    if _stack is None:
        _lock_file = _take_lock()
        try:
            _stack = start_stack(Path(tempfile.mkdtemp(prefix="test-celery-")))
        except BaseException:
            _lock_file.close()
            _lock_file = None
            raise
    _users += 1
    return _stack


def release() -> None:
    global _stack, _users, _lock_file
    _users -= 1
    if _users or _stack is None:
        return
    try:
        _stack.close()
    finally:
        _stack = None
        if _lock_file is not None:
            _lock_file.close()
            _lock_file = None
