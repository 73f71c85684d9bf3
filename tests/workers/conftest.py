"""The one conftest of the Celery tests: tests/workers and tests/tasks (whose conftest is this
module, re-exported).

Two ways to run tasks on a real worker:

- in this process, for task behaviour: celery.contrib.pytest's ``celery_worker`` (a worker
  thread, threads pool of two) on ``celery_app``, here the platform's own app
  (workers.factory.create_app) rather than a bare test app, since tasks reach their runtime
  through it. Broker, results and cache live on a redis-server of the session's own (databases
  1, 2 and 0; emptied after each test), the cache under a prefix of the test's own; the tasks'
  PostgreSQL database is ``pg_database``. :class:`InProcess` (fixture ``worker``) is the
  producer's view of it: send through the client, wait for the result, read the cache.
- on either broker: ``celery_broker`` is "redis" (the session's redis-server, database 1)
  unless a test asks for both with ``@BOTH_BROKERS``; "amqp" is a RabbitMQ vhost of the test
  run's own (``rabbitmq_url``), results staying on the redis-server (the durable role). The
  tests that exercise the broker (enqueue, route, worker, retry, redelivery) run on both.
- in real processes, for fault and failover tests (a killed worker, two beats, Flower, the
  entry point): ``stack`` and ``clean_stack`` (tests/workers/harness.py).

Unit tests without a worker use the root conftest's ``settings`` and ``cache`` (the shared
Redis, database 13, a prefix per test).
"""

from __future__ import annotations

import gc
import json
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping: the ready check)
import pytest

# celery.contrib.pytest's in-process worker: pytest-celery 1.x's plugin re-exports it, then
# shadows the name with its docker-based worker; a conftest fixture takes precedence again.
from celery.contrib.pytest import celery_worker as celery_worker
from celery.states import READY_STATES
from sqlalchemy import Engine

from cache import CacheService
from config import Settings
from db import make_engine
from tests.support import rabbitmq
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers import harness, services
from workers import routing
from workers.client import Progress, TaskClient
from workers.factory import create_app
from workers.runtime import CacheCelery, Parts, Runtime

PG_MEMBERS = 200  # seeded in pg_database; ids 1..200
BROKERS = ("redis", "amqp")
# A test (or module, as pytestmark) that exercises the broker runs on Redis and on RabbitMQ.
BOTH_BROKERS = pytest.mark.parametrize("celery_broker", BROKERS, indirect=True)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test run's own (created on first use, deleted at the end)."""
    with rabbitmq.vhost() as url:
        yield url


@pytest.fixture
def celery_broker(request: pytest.FixtureRequest) -> str:
    """The broker of the in-process worker: "redis" unless parametrized (BOTH_BROKERS)."""
    broker = str(getattr(request, "param", "redis"))
    assert broker in BROKERS, broker
    return broker


@pytest.fixture(scope="session")
def stack() -> Iterator[harness.Stack]:
    """A running worker process consuming all five queues, with its client, cache and Redis."""
    shared = harness.acquire()
    try:
        yield shared
    finally:
        harness.release()


@pytest.fixture
def clean_stack(stack: harness.Stack) -> Iterator[harness.Stack]:
    """The stack with no cache keys under its prefix, before and after the test."""
    stack.clear_cache()
    yield stack
    stack.clear_cache()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A migrated PostgreSQL database seeded with PG_MEMBERS members; dropped afterwards.
    Tests that write to it use their own rows (or their own periods)."""
    name, url = services.create_database(PG_MEMBERS)
    try:
        yield url
    finally:
        services.drop_database(name)


@pytest.fixture(scope="session")
def pg_engine(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def task_redis() -> Iterator[RedisProcess]:
    """The redis-server of the in-process worker: the session's own, so its queues meet no
    other session's and BGSAVE and CONFIG (the backup and audit jobs) are the test's to use."""
    proc = start_redis()
    try:
        yield proc
    finally:
        proc.close()


# A function sending a task (its id) -> the id and the (state, meta) announced for it.
FollowTask = Callable[[Callable[[], str]], tuple[str, list[tuple[str, Any]]]]


@pytest.fixture
def published_states(task_redis: RedisProcess) -> Iterator[FollowTask]:
    """Sends a task and returns its id and the states the result backend published for it, up
    to SUCCESS or FAILURE (30 s at the most), as Flower and the API's progress endpoint see them."""
    listener = task_redis.client(db=services.RESULTS_DB)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)

    def follow(send: Callable[[], str]) -> tuple[str, list[tuple[str, Any]]]:
        pubsub.psubscribe("celery-task-meta-*")  # before the send: pub/sub is not kept
        task_id = send()
        states: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not states or states[-1][0] not in READY_STATES):
            message = pubsub.get_message(timeout=0.5)
            # Pub/sub is server-wide: other tasks' announcements are filtered out by id.
            if message and message["channel"].decode().endswith(task_id):
                meta = json.loads(message["data"])
                states.append((meta["status"], meta["result"]))
        pubsub.punsubscribe()
        return task_id, states

    try:
        yield follow
    finally:
        pubsub.close()
        listener.close()


@pytest.fixture
def task_env(task_redis: RedisProcess, pg_database: str, tmp_path: Path) -> dict[str, str]:
    """The environment of the in-process worker's Settings: the session's redis-server,
    pg_database, a cache prefix and a backup directory of the test's own."""
    prefix = f"test-task-{uuid.uuid4().hex[:8]}:"
    backups = str(tmp_path / "backups")
    return services.stack_env(prefix, task_redis.port, pg_database, BACKUP_DIR=backups)


@pytest.fixture
def task_settings(
    task_env: dict[str, str], celery_broker: str, request: pytest.FixtureRequest
) -> Settings:
    """task_env's Settings, on the test's broker: the redis-server's database 1 (task_env's)
    or the run's RabbitMQ vhost."""
    if celery_broker == "amqp":
        task_env = task_env | {"CELERY_BROKER_URL": request.getfixturevalue("rabbitmq_url")}
    return harness.settings_from_env(task_env)


@pytest.fixture
def celery_parts() -> Parts:
    """Runtime parts the app builds with another factory (a module redefines it: a slow
    source, say); none by default."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"  # two tasks in flight at once, in this process


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, object]:
    return {"concurrency": 2}


@pytest.fixture
def celery_app(
    task_settings: Settings, task_redis: RedisProcess, celery_parts: Parts
) -> Iterator[CacheCelery]:
    """celery.contrib.pytest's app fixture, redefined as the platform's app: the worker
    (celery_worker) runs the real task modules, routes and limits of workers/routing.py."""
    app = create_app(task_settings, parts=celery_parts)
    amqp = bool(
        task_settings.celery_broker_url and task_settings.celery_broker_url.startswith("amqp")
    )
    if amqp:
        # On AMQP the worker's event loop sleeps until its next timer (up to 10 s) before it
        # sees a stop; heartbeat checks every second wake it, so the test worker stops at once.
        app.conf.broker_heartbeat = 2
    try:
        yield app
    finally:
        if amqp:
            app.control.purge()  # the vhost outlives the test: leave its queues empty
        app.close_runtime()
        app.close()
        # Celery keeps a result backend per thread; the worker's threads leave theirs (and
        # their sockets) to the collector: collect them at the app's end, not in whichever
        # later test the collector happens to run.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        for db in (services.CACHE_DB, services.BROKER_DB, services.RESULTS_DB):
            client = task_redis.client(db=db)
            try:
                client.flushdb()  # the session's own server: nothing else lives there
            finally:
                client.close()


@dataclass
class InProcess:
    """The in-process worker seen from a producer: its client, its results, its cache."""

    app: CacheCelery
    client: TaskClient
    settings: Settings

    @property
    def runtime(self) -> Runtime:
        """The worker's runtime: its threads run in this process, so this is theirs."""
        return self.app.runtime()

    @property
    def cache(self) -> CacheService:
        return self.runtime.cache

    def wait(self, task_id: str, timeout: float = 20.0) -> Progress:
        """Poll the result backend until the task is SUCCESS or FAILURE."""
        return harness.final(self.client, task_id, timeout)

    def run(self, spec: routing.TaskSpec, *args: object) -> Progress:
        """Send by name on the task's queue, as a producer does, and wait for the outcome."""
        return self.wait(self.client.send(spec, *args))

    def cache_keys(self) -> set[str]:
        """The cache keys under the prefix, platform state (sys:) excluded."""
        prefix = self.settings.redis_key_prefix
        return {
            key.decode()
            for key in self.cache.clients.writer.scan_iter(match=prefix + "*", count=1000)
            if not key.startswith(f"{prefix}sys:".encode())
        }


@pytest.fixture
def worker(celery_app: CacheCelery, celery_worker: object, task_settings: Settings) -> InProcess:
    """A worker thread consuming every queue of the platform's app (celery_worker)."""
    return InProcess(celery_app, TaskClient(task_settings, app=celery_app), task_settings)
