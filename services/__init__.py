"""One services object per process (API, worker, beat, cachectl), built once from Settings.

Each process builds :class:`Services` once, at its entry point (the API's lifespan, a Celery
worker process's first task, beat's scheduler set-up, a cachectl command), and hands it to
everything else; nothing builds a second cache, client or engine "just to borrow" one::

    services = Services.open(settings, asyncio=True, tasks=True)    # the API
    services = Services.open(settings)                              # worker, beat, cachectl
    ...
    await services.aclose()      # or services.close() when no async front was built

Modules: process (Services). The import of workers.client is deferred to the processes that
enqueue, and that of db/ to the first use of the engine: the worker runtime builds a Services
and workers.client imports the worker runtime.
"""

from __future__ import annotations

from services.process import ROLES, Role, Services

__all__ = ["ROLES", "Role", "Services"]
