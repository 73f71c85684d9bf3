"""The worker entry point: ``celery -A workers.app worker|beat|flower``.

The one module-level singleton of the project: the app built from the Settings of this
process (environment and ``.env``). Everything else receives Settings explicitly; code that
only enqueues uses workers/client.py and never imports this module.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

from config import load_settings_or_exit
from workers.client import TaskClient
from workers.factory import create_app

log = logging.getLogger("workers.app")

# A bad setting stops the worker, beat or Flower here: one line, exit code 2.
app = create_app(load_settings_or_exit())


@worker_ready.connect
def _warm_if_cold(**_: Any) -> None:
    # A worker that starts against a cold cache warms it: the check runs in the task (on a
    # pool process, with the runtime), so start-up is not delayed; the task's lease keeps
    # several workers starting together to one warm-up. Sent by name: workers/ never
    # imports tasks/.
    if not app.settings.cache_autowarm:
        return
    try:
        TaskClient(app.settings, app=app).enqueue_auto_warm("worker-start", only_if_cold=True)
    except Exception as exc:  # a broker hiccup must not stop the worker; beat looks again
        log.warning("automatic warm-up not sent at start-up: %s", exc)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    # A pool process (or a solo worker) going away publishes its last counters and closes
    # its services (cache clients, engine); a process that never ran a task has no runtime
    # and nothing to do.
    app.close_runtime()


__all__ = ["app", "create_app"]
