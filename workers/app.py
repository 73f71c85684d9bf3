"""The worker entry point: ``celery -A workers.app worker|beat|flower``.

The one module-level singleton of the project: the app built from the Settings of this
process (environment and ``.env``). Everything else receives Settings explicitly; code that
only enqueues uses workers/client.py and never imports this module.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_shutdown, worker_shutdown

from config import load_settings
from workers.factory import create_app

app = create_app(load_settings())


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    # A pool process (or a solo worker) going away publishes its last counters and closes
    # its services (cache clients, engine); a process that never ran a task has no runtime
    # and nothing to do.
    app.close_runtime()


__all__ = ["app", "create_app"]
