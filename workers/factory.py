"""``create_app(settings)``: the Celery app of the platform, configured from Settings.

Importing this module builds nothing; workers/app.py builds the one module-level app for the
``celery -A workers.app`` entry point, and workers/client.py builds a producer-only app
for processes that enqueue (the API, cachectl) without importing any task code.
"""

from __future__ import annotations

from typing import Final

import celeryconfig
from config import Settings
from workers.runtime import (
    CacheCelery,
    RecordsFactory,
    SourceFactory,
    default_records_factory,
    default_source_factory,
)

APP_NAME: Final = "membership_cache"
# Imported by the worker at start-up (and by nothing else): producers send by name.
TASK_MODULES: Final = (
    "tasks.warmup",
    "tasks.invalidation",
    "tasks.metrics",
    "tasks.maintenance",
    "tasks.writebehind",
)


def create_app(
    settings: Settings,
    *,
    source_factory: SourceFactory = default_source_factory,
    records_factory: RecordsFactory = default_records_factory,
) -> CacheCelery:
    """A configured app. ``source_factory`` builds the database source a worker process reads,
    ``records_factory`` where the jobs store snapshots and reports; both receive the process's
    services (services.Services; the defaults use its engine, tests may pass fakes)."""
    app = CacheCelery(
        settings,
        APP_NAME,
        source_factory=source_factory,
        records_factory=records_factory,
        include=list(TASK_MODULES),
        set_as_current=False,
    )
    app.conf.update(celeryconfig.from_settings(settings))
    return app
