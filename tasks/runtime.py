"""What a task reaches at run time: its worker process's Runtime, plus the task side's parts.

The dependency runs one way: tasks/ import workers/ (the routing table, the runtime, the
period guard, the publisher), workers/ never import tasks/. The worker's Runtime
(workers/runtime.py) owns what every process has: the cache service, the period guard, the
metrics publisher. What only tasks use is declared here as a :class:`~workers.runtime.Part`
and built by the runtime on first use in each process, closed with it:

    SOURCE      where warm-ups read (tasks/sources.py SqlSource)
    RECORDS     where the jobs store snapshots and reports (tasks/records.py SqlRecords)
    LIFETIMES   ages of entries at invalidation (tasks/lifetimes.py), published with the
                process's counters under "lifetimes"
    MONITOR     the consistency monitor's checks (tasks/monitor.py) and its API probe

A task calls :func:`runtime_of` (this module's, not the worker's) and gets a
:class:`TaskRuntime`: the worker's runtime with these parts as attributes. A test replaces a
part's factory on its app: ``create_app(settings, parts={SOURCE: FakeSource.build})``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from celery import Task

from cache import CacheService
from config import Settings
from services import Services
from tasks.lifetimes import Lifetimes
from tasks.monitor import Monitor, probe_client
from tasks.records import Records, SqlRecords
from tasks.sources import Source, SqlSource
from workers import runtime as worker_runtime
from workers.periods import PeriodGuard
from workers.publisher import MetricsPublisher
from workers.runtime import Part, Runtime


def _new_lifetimes(_: Services) -> Lifetimes:
    return Lifetimes()


def _new_source(services: Services) -> Source:
    return SqlSource(services.engine)


def _new_records(services: Services) -> Records:
    return SqlRecords(services.engine)


def _new_monitor(services: Services) -> Monitor:
    return Monitor(
        services.cache,
        services.redis("durable"),
        services.engine,
        services.consistency,
        probe_client(services.consistency.config),
    )


def _close_monitor(monitor: Monitor) -> None:
    if monitor.probe is not None:
        monitor.probe.close()


def _publish_lifetimes(lifetimes: Lifetimes) -> dict[str, Any]:
    return lifetimes.snapshot()


# Over the process's one engine (services.Services.engine), which the services dispose of.
SOURCE: Final[Part[Source]] = Part("source", _new_source)
RECORDS: Final[Part[Records]] = Part("records", _new_records)
LIFETIMES: Final[Part[Lifetimes]] = Part("lifetimes", _new_lifetimes, publish=_publish_lifetimes)
MONITOR: Final[Part[Monitor]] = Part("monitor", _new_monitor, close=_close_monitor)


@dataclass(frozen=True, slots=True)
class TaskRuntime:
    """The worker's Runtime seen from a task: its services, and the task side's parts."""

    worker: Runtime

    @property
    def settings(self) -> Settings:
        return self.worker.settings

    @property
    def services(self) -> Services:
        return self.worker.services

    @property
    def cache(self) -> CacheService:
        return self.worker.cache

    @property
    def guard(self) -> PeriodGuard:
        return self.worker.guard

    @property
    def publisher(self) -> MetricsPublisher:
        return self.worker.publisher

    @property
    def source(self) -> Source:
        return self.worker.part(SOURCE)

    @property
    def records(self) -> Records:
        return self.worker.part(RECORDS)

    @property
    def lifetimes(self) -> Lifetimes:
        return self.worker.part(LIFETIMES)

    @property
    def monitor(self) -> Monitor:
        return self.worker.part(MONITOR)


def runtime_of(task: Task[Any, Any]) -> TaskRuntime:
    """The runtime of the worker process running ``task``."""
    return TaskRuntime(worker_runtime.runtime_of(task))
