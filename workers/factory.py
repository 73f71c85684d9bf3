"""``create_app(settings)``: the Celery app of the platform, configured from Settings.

Importing this module builds nothing; workers/app.py builds the one module-level app for the
``celery -A workers.app`` entry point, and workers/client.py builds a producer-only app
for processes that enqueue (the API, cachectl) without importing any task code.
"""

from __future__ import annotations

from typing import Final

import celeryconfig
from config import Settings
from workers.runtime import CacheCelery, Parts

APP_NAME: Final = "membership_cache"
# Imported by the worker at start-up, by name (workers/ never imports tasks/): producers send
# by name and load none of them.
TASK_MODULES: Final = (
    "tasks.warmup",
    "tasks.chunks",
    "tasks.autowarm",
    "tasks.refresh",
    "tasks.invalidation",
    "tasks.metrics",
    "tasks.maintenance",
    "tasks.writebehind",
    "tasks.alerts",
    "tasks.consistency",
)


def create_app(settings: Settings, *, parts: Parts | None = None) -> CacheCelery:
    """A configured app. ``parts`` replaces the factory of runtime parts the tasks declare
    (tasks/runtime.py: the database source, the records), by part; tests pass fakes."""
    app = CacheCelery(
        settings,
        APP_NAME,
        parts=parts,
        include=list(TASK_MODULES),
        set_as_current=False,
    )
    app.conf.update(celeryconfig.from_settings(settings))
    return app
