"""Throwaway stacks for the benches.

:func:`start` (bench/tasks.py): a redis-server, a PostgreSQL database, a worker.
:func:`start_platform` (bench/replay.py): the API, a worker and beat as ``cachectl up`` starts
them, over the Redis and database the caller gives.

Nothing shared is touched: :func:`start`'s redis-server is started for the run (broker on
database 1, results on 2, cache on 0) and stopped after it; the database is created, seeded,
and dropped; the worker is a ``celery -A workers.app worker`` subprocess on that pair.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import _pg
from cache import CacheService, build_cache
from cachectl import stack as cachectl_stack
from cachectl.embedded import EmbeddedRedis, start_embedded_redis
from cachectl.stack import Supervisor
from config import Settings, load_settings
from services import Services
from workers.client import TaskClient

PREFIX: Final = "bench:tasks:"
REPO: Final = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    directory: Path
    redis: EmbeddedRedis
    database: str
    database_url: str
    settings: Settings
    env: dict[str, str]
    client: TaskClient
    cache: CacheService
    worker: subprocess.Popen[bytes]
    more_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def workers(self) -> list[subprocess.Popen[bytes]]:
        return [self.worker, *self.more_workers]

    def add_worker(self, concurrency: int = 1) -> None:
        """One more ``celery worker`` process on the same queues, ready when this returns."""
        index = len(self.workers)
        self.more_workers.append(_spawn_worker(self.directory, self.env, concurrency, index))
        _wait_ready(self, expected=index + 1)

    def use_broker(self, broker: str | None) -> None:
        """The workers and the client moved to another broker (None: the stack's
        redis-server): every worker stopped, one started on it, ready when this returns.
        Results and the cache stay on the stack's redis-server."""
        self._stop_workers()
        self.client.close()
        self.env["CELERY_BROKER_URL"] = broker or _redis_broker(self.redis.port)
        self.settings = _settings(self.env)
        self.client = TaskClient(self.settings)
        self.more_workers = []
        self.worker = _spawn_worker(self.directory, self.env, 1, 0)
        _wait_ready(self, expected=1)

    def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)

    def close(self) -> None:
        try:
            self._stop_workers()
        finally:
            self.client.close()
            self.cache.close()
            self.redis.stop()
            _pg.drop(self.database)
            shutil.rmtree(self.directory, ignore_errors=True)


def _spawn_worker(
    directory: Path, env: dict[str, str], concurrency: int, index: int
) -> subprocess.Popen[bytes]:
    # The child writes the log through its own copy of the descriptor.
    with (directory / f"worker{index}.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                *("-m", "celery", "-A", "workers.app", "worker", "-l", "WARNING"),
                *("-Q", "cache.warmup,cache.invalidate", "-c", str(concurrency)),
                *("-n", f"bench{index}@%h", "--without-gossip", "--without-mingle"),
            ],
            cwd=directory,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _redis_broker(port: int) -> str:
    return f"redis://127.0.0.1:{port}/1"


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(**{k.lower(): v for k, v in env.items()}, _env_file=None)


def _wait_ready(stack: Stack, expected: int) -> None:
    deadline = time.monotonic() + 60
    while len(stack.client.app.control.ping(timeout=0.5) or []) < expected:
        if any(w.poll() is not None for w in stack.workers) or time.monotonic() > deadline:
            logs = "\n".join(
                p.read_text(errors="replace") for p in stack.directory.glob("worker*.log")
            )
            stack.close()
            raise RuntimeError(f"the benchmark's workers did not start:\n{logs}")


def start(
    members: int, concurrency: int, *, broker: str | None = None, chunk_size: int | None = None
) -> tuple[Stack, float]:
    """The running stack and the seconds its database took to seed. ``broker``: another
    broker URL than the stack's redis-server (RabbitMQ, say); ``chunk_size``: the warm-up's
    CACHE_WARMUP_CHUNK_SIZE."""
    directory = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
    redis = start_embedded_redis(directory)
    try:
        seeded = _pg.create_seeded(members)
    except BaseException:
        redis.stop()
        raise
    port = redis.port
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(port),
        "REDIS_DB": "0",
        "REDIS_KEY_PREFIX": PREFIX,
        "CELERY_BROKER_URL": broker or _redis_broker(port),
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/2",
        "DATABASE_URL": seeded.url,
        # A worker start would warm the cold cache by itself (tasks/autowarm.py): its hottest
        # members and full-table aggregates would count in the first measured run.
        "CACHE_AUTOWARM": "false",
    }
    if chunk_size is not None:
        env["CACHE_WARMUP_CHUNK_SIZE"] = str(chunk_size)
    settings = _settings(env)
    worker = _spawn_worker(directory, env, concurrency, 0)
    client = TaskClient(settings)
    stack = Stack(
        directory,
        redis,
        seeded.name,
        seeded.url,
        settings,
        env,
        client,
        build_cache(settings),
        worker,
    )
    _wait_ready(stack, expected=1)
    return stack, seeded.seconds


# --- the whole platform, as `cachectl up` runs it (bench.replay) ------------------------------
# A run is over when the platform stops: what a warm shutdown would finish is not measured.
STOP_TIMEOUT: Final = 3.0


@dataclass
class Platform:
    """API, worker and beat started by cachectl.stack's own commands and readiness checks,
    in a directory of their own (no .env of the working tree: the environment is all)."""

    supervisor: Supervisor
    services: Services
    base_url: str

    def close(self) -> None:
        """SIGTERM to every child at once (a run is over: no order to keep, and the warm
        shutdowns overlap), then cachectl's stop for what lingers."""
        try:
            for child in self.supervisor.children:
                if child.alive and child.proc is not None:
                    child.proc.send_signal(signal.SIGTERM)
            self.supervisor.stop_all(STOP_TIMEOUT)
        finally:
            self.services.close()


def start_platform(env: dict[str, str], workdir: Path, concurrency: int = 2) -> Platform:
    """The API, a worker consuming every queue and beat over ``env``; returns once each
    answers its readiness check (RuntimeError with the log's tail when one exits)."""
    settings = _settings(env)
    workdir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(workdir, env | {"PYTHONPATH": str(REPO)}, cwd=workdir)
    services = Services.open(settings, tasks=True)
    platform = Platform(supervisor, services, cachectl_stack.api_url(settings))
    try:
        started = {
            name: supervisor.start(name, argv)
            for name, argv in cachectl_stack.commands(settings, workdir, concurrency).items()
            if name in ("api", "worker", "beat")
        }
        probes = cachectl_stack.checks(services, started)
        missing = cachectl_stack.wait_ready(supervisor, {name: probes[name] for name in started})
        if missing:
            raise RuntimeError(f"not ready: {missing}")
    except BaseException:
        platform.close()
        raise
    return platform
