"""What a task needs at run time, built once per worker process from the app's Settings.

The Celery app carries the Settings it was built from (``CacheCelery.settings``); tasks reach
their process's :class:`Runtime` through :func:`runtime_of`. The runtime wraps the process's
one services object (services.Services: the cache core and its sync front, the Redis clients
per role, the database engine, the write-behind buffer) and adds what tasks use on top of it:
the period guard, the metrics publisher, and the parts its tasks declare.

A runtime publishes its process's cache counters to Redis every few seconds
(workers/publisher.py), for the metrics snapshot to merge. It is built lazily in the process
that runs tasks, never before a fork, so a prefork child never shares a parent's Redis or
database sockets: the process id is checked on every access.

workers/ never imports tasks/. What only tasks use (the database source of the warm-ups, the
records of the jobs, the invalidation lifetimes) is declared on the task side as a
:class:`Part` (tasks/runtime.py) and built here on first use, per process, from the
process's services, closed with the runtime; a part with ``publish`` is published with the
process's counters. An app may replace a part's factory
(``create_app(settings, parts={SOURCE: fake})``): tests do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from celery import Celery

from cache import CacheService
from services import Services
from workers import routing
from workers.periods import PeriodGuard
from workers.publisher import MetricsPublisher

if TYPE_CHECKING:
    from celery import Task

    from config import Settings

T = TypeVar("T")
Factory = Callable[[Services], T]


@dataclass(frozen=True, eq=False)
class Part(Generic[T]):
    """A per-process resource declared by the code that uses it: built from the process's
    services on first use, closed with the runtime and, with ``publish``, published under
    ``name``."""

    name: str
    build: Factory[T]
    close: Callable[[T], None] | None = None
    publish: Callable[[T], dict[str, Any]] | None = None


Parts = Mapping[Part[Any], Factory[Any]]


class Runtime:
    """One process's services, period guard and metrics publisher, and (lazily) the parts its
    tasks ask for."""

    def __init__(
        self, settings: Settings, parts: Parts | None = None, *, publish: bool = True
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
        self.publisher = MetricsPublisher(
            self.cache, "worker", client=self.services.redis("durable")
        )
        if publish:
            self.publisher.start()
        self._factories: dict[Part[Any], Factory[Any]] = dict(parts or {})
        self._parts: dict[Part[Any], Any] = {}
        self._lock = threading.Lock()

    def part(self, part: Part[T]) -> T:
        """This process's instance of ``part``, built on first use."""
        with self._lock:
            if part not in self._parts:
                value = self._factories.get(part, part.build)(self.services)
                self._parts[part] = value
                if part.publish is not None:
                    publish = part.publish
                    self.publisher.extras[part.name] = lambda: publish(value)
            return cast(T, self._parts[part])

    def close(self) -> None:
        try:
            self.publisher.stop()
            with self._lock:
                built, self._parts = list(self._parts.items()), {}
            for part, value in reversed(built):
                if part.close is not None:
                    part.close(value)
        finally:
            self.services.close()


class CacheCelery(Celery):
    """A Celery app that knows its Settings and hands each process one Runtime."""

    def __init__(
        self,
        settings: Settings,
        *args: Any,
        parts: Parts | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self._part_factories: dict[Part[Any], Factory[Any]] = dict(parts or {})
        self._runtime: Runtime | None = None
        self._runtime_pid = 0
        self._runtime_lock = threading.Lock()

    def runtime(self) -> Runtime:
        pid = os.getpid()
        with self._runtime_lock:
            if self._runtime is None or self._runtime_pid != pid:
                # After a fork the parent's runtime is dropped, not closed: its sockets belong
                # to the parent.
                self._runtime = Runtime(self.settings, self._part_factories)
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
