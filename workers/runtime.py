"""What a task needs at run time, built once per worker process from the app's Settings.

The Celery app carries the Settings it was built from (``CacheCelery.settings``); tasks reach
their process's :class:`Runtime` through :func:`runtime_of`. The runtime wraps the process's
one services object (services.Services: the cache core and its sync front, the Redis clients
per role, the database engine, the write-behind buffer) and adds what tasks use on top of it:
the period guard, the metrics publisher, the invalidation lifetimes, and the database source
and records, built on first use over the services' engine.

It is built lazily in the process that runs tasks, never before a fork, so a prefork child
never shares a parent's Redis or database sockets: the process id is checked on every access.
It publishes its process's cache counters to Redis every few seconds (workers/publisher.py),
for the metrics snapshot to merge.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery

from cache import CacheService
from services import Services
from workers import routing
from workers.periods import PeriodGuard
from workers.publisher import MetricsPublisher

if TYPE_CHECKING:
    from celery import Task

    from config import Settings
    from tasks.records import Records
    from tasks.sources import Source

SourceFactory = Callable[[Services], "Source"]
RecordsFactory = Callable[[Services], "Records"]


def default_source_factory(services: Services) -> Source:
    from tasks.sources import SqlSource  # the data layer is loaded only where it is used

    return SqlSource(services.engine)


def default_records_factory(services: Services) -> Records:
    from tasks.records import SqlRecords

    return SqlRecords(services.engine)


class Runtime:
    """One process's services, period guard, metrics publisher and (lazily) database source
    and records, the last two over the services' engine."""

    def __init__(
        self,
        settings: Settings,
        source_factory: SourceFactory,
        records_factory: RecordsFactory = default_records_factory,
        *,
        publish: bool = True,
    ) -> None:
        self.settings = settings
        self.services = Services.open(settings)
        self.cache: CacheService = self.services.cache
        # The lease outlives any task's hard limit, so a claim cannot expire under a live run.
        self.guard = PeriodGuard(
            self.services.redis("durable"),
            self.services.keys,
            lease_seconds=routing.longest_hard_limit(),
        )
        from tasks.lifetimes import Lifetimes  # task-side code: loaded only where tasks run

        self.lifetimes = Lifetimes()
        self.publisher = MetricsPublisher(
            self.cache,
            "worker",
            extras={"lifetimes": self.lifetimes.snapshot},
            client=self.services.redis("durable"),
        )
        if publish:
            self.publisher.start()
        self._source_factory = source_factory
        self._records_factory = records_factory
        self._source: Source | None = None
        self._records: Records | None = None
        self._lock = threading.Lock()

    @property
    def source(self) -> Source:
        with self._lock:
            if self._source is None:
                self._source = self._source_factory(self.services)
            return self._source

    @property
    def records(self) -> Records:
        with self._lock:
            if self._records is None:
                self._records = self._records_factory(self.services)
            return self._records

    def close(self) -> None:
        try:
            self.publisher.stop()
            if self._source is not None:
                self._source.close()
            if self._records is not None:
                self._records.close()
        finally:
            self.services.close()


class CacheCelery(Celery):
    """A Celery app that knows its Settings and hands each process one Runtime."""

    def __init__(
        self,
        settings: Settings,
        *args: Any,
        source_factory: SourceFactory = default_source_factory,
        records_factory: RecordsFactory = default_records_factory,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self._source_factory = source_factory
        self._records_factory = records_factory
        self._runtime: Runtime | None = None
        self._runtime_pid = 0
        self._runtime_lock = threading.Lock()

    def runtime(self) -> Runtime:
        pid = os.getpid()
        with self._runtime_lock:
            if self._runtime is None or self._runtime_pid != pid:
                # After a fork the parent's runtime is dropped, not closed: its sockets belong
                # to the parent.
                self._runtime = Runtime(self.settings, self._source_factory, self._records_factory)
                self._runtime_pid = pid
            return self._runtime

    def close_runtime(self) -> None:
        with self._runtime_lock:
            if self._runtime is not None and self._runtime_pid == os.getpid():
                self._runtime.close()
            self._runtime = None


def runtime_of(task: Task[Any, Any]) -> Runtime:
    """The Runtime of the app running ``task`` (built by workers.app.create_app)."""
    app = task.app
    if not isinstance(app, CacheCelery):
        raise TypeError(f"task {task.name} runs on {app!r}, not an app from create_app()")
    return app.runtime()
