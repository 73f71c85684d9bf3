"""The automatic warm-up: the critical warm-up, run with no command typed, one at a time.

Triggers (each sends :func:`auto_warm` by name; none waits for it)::

    worker_ready signal (workers/app.py)   only_if_cold: a worker start warms a cold cache
    management DELETE /clear               after a clear that removed entries: every
                                           member too (CACHE_AUTOWARM_AFTER_CLEAR=all),
                                           chunked over the workers as ``warmup all``
    redis-watch beat job (watch_redis)     the cache server's run id or master changed
    cachectl up, the production deploy     their last step (``cachectl warmup auto``)

**Cold** means: a current key of an aggregate or lookup kind marked ``Warm.CRITICAL`` is
missing (generations read first, as the API reads them; one EXISTS pipeline). Not a marker
key written by the last warm-up: a marker says "a warm-up once ran", not "the first reads
will hit". An eviction, a member change that bumped a tag, a failover to an empty replica or
a ``clear`` each leave a marker standing while the entries it vouched for are gone; the keys
the first requests read are the truth, and checking them costs two round trips.

**One at a time across all workers**: a lease on ``<prefix>sys:warmup:lease`` (the beat's
:class:`~workers.scheduler.LeaderLease`: SET NX PX, renewed by compare-and-set on each
batch's progress report, released by compare-and-delete). Its value names the task holding
it, so a second trigger's result says it was skipped and by whom, and the API serves it to
the dashboard (``GET /api/v1/cache/warmup/current``, workers/warmstate.py). A worker that dies
mid-run leaves a lease that lapses after ``cache_autowarm_lease_s``.

**Restart and failover**: :func:`watch_redis` (beat, every WATCH_SECONDS) reads INFO's
``run_id`` and the master's address and swaps them into ``<prefix>sys:redis:identity`` with
one ``SET .. GET``: exactly one watcher sees the old value, so one warm-up is sent per change.
A missing record means a server that lost its data (or a first start): that warms too.

A Redis that cannot be reached makes the task retry (CacheUnavailable, with backoff); the
API never waits for any of this.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from celery import Task, shared_task
from redis.exceptions import RedisError

from cache import CacheService
from cache.errors import CacheUnavailable
from cache.flow import UNAVAILABLE
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Warm
from db.errors import DatabaseUnavailable
from tasks import chunks, warming
from tasks.runtime import runtime_of
from workers import routing, warmstate
from workers.client import TaskClient
from workers.runtime import CacheCelery
from workers.scheduler import LeaderLease

log = logging.getLogger("tasks.autowarm")

RETRY_ON: Final = (CacheUnavailable, DatabaseUnavailable)

REASONS: Final = routing.AUTO_WARM_REASONS


# --- decisions (pure) ---------------------------------------------------------------------------
def identity_change(previous: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """Why a warm-up is due after the Redis identity moved from ``previous`` to ``current``,
    or None when it did not move. No record: the server lost its data, or this is the first
    look; either way a warm-up is cheap insurance."""
    if previous is None:
        return "redis-unknown"
    if previous.get("master") != current.get("master"):
        return "redis-failover"
    if previous.get("run_id") != current.get("run_id"):
        return "redis-restart"
    return None


# --- reads ----------------------------------------------------------------------------------------
def missing_critical(cache: CacheService) -> list[str]:
    """The current keys of the ``Warm.CRITICAL`` kinds that Redis does not hold."""
    wanted: list[str] = []
    for kind in KINDS.warmed(Warm.CRITICAL):
        gens = generations_sync(cache, kind.tags)
        if gens is None:
            raise CacheUnavailable(f"could not read the generations of {kind.name}")
        wanted += kind.variant_keys(cache.keys, gens)

    def exists(keys: list[str]) -> list[Any]:
        pipe = cache.clients.writer.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return list(pipe.execute())

    found = cache.run(exists, wanted)
    if found is UNAVAILABLE:
        raise CacheUnavailable("could not check the critical keys")
    return [key for key, there in zip(wanted, found, strict=True) if not there]


def redis_identity(cache: CacheService, sentinel_master: str) -> dict[str, Any]:
    """The cache server's run id and master address (CacheUnavailable when unreachable)."""
    info = cache.info("server")
    if info is None:
        raise CacheUnavailable("INFO server unanswered")
    clients = cache.clients
    if clients.sentinel is not None:
        try:
            host, port = clients.sentinel.discover_master(sentinel_master)
        except RedisError as exc:
            raise CacheUnavailable(f"sentinels name no master: {exc}") from exc
        master = f"{host}:{port}"
    else:
        kwargs = getattr(clients.writer, "connection_pool", None)
        params = getattr(kwargs, "connection_kwargs", {}) if kwargs is not None else {}
        master = f"{params.get('host', clients.mode)}:{params.get('port', '')}"
    return {"run_id": str(info.get("run_id", "")), "master": master}


# --- the tasks ------------------------------------------------------------------------------------
def send_auto_warm(task: Task[Any, Any], reason: str, *, only_if_cold: bool = False) -> str:
    """Send :func:`auto_warm` (from a task) through the task client on the task's own app."""
    app = task.app
    if not isinstance(app, CacheCelery):
        raise TypeError(f"task {task.name} runs on {app!r}, not an app from create_app()")
    return TaskClient(app.settings, app=app).enqueue_auto_warm(reason, only_if_cold=only_if_cold)


@shared_task(bind=True, **routing.task_options(routing.AUTO_WARM, retry_on=RETRY_ON))
def auto_warm(self: Task[Any, Any], reason: str, only_if_cold: bool = False) -> dict[str, Any]:
    """The critical warm-up under the cluster-wide lease; skipped when another holds it (or,
    with ``only_if_cold``, when every critical key is cached)."""
    if reason not in REASONS:
        raise ValueError(f"unknown warm-up reason {reason!r}; expected one of {REASONS}")
    runtime = runtime_of(self)
    cache, settings = runtime.cache, runtime.settings
    answer: dict[str, Any] = {"reason": reason, "warmed": False}
    everything = reason == "clear" and settings.cache_autowarm_after_clear == "all"
    # More members than one chunk: the chord of chunks takes this task's place (it takes the
    # lease itself, and answers "skipped" when another warm-up holds it).
    if everything and (skipped := chunks.start(self, aggregates=True, reason=reason)):
        return answer | skipped
    if only_if_cold:
        missing = missing_critical(cache)
        answer["cold_keys"] = len(missing)
        if not missing:
            return answer | {"skipped": "warm"}
    durable = runtime.worker.services.redis("durable")
    task_id = str(self.request.id or "")
    holder = warmstate.holder(task_id, reason, self.request.hostname)
    key = warmstate.lease_key(cache.keys)
    lease = LeaderLease(
        durable, key, float(settings.cache_autowarm_lease_s), token=warmstate.encoded(holder)
    )
    if not lease.hold():
        return answer | {"skipped": "running", "by": warmstate.held_by(durable, cache.keys)}

    def progress(done: int, total: int) -> None:
        if not lease.hold():  # renewed (at most once a second); lost means it lapsed
            log.warning("auto warm-up %s lost its lease; finishing anyway", task_id)
        self.update_state(state="PROGRESS", meta={"done": done, "total": total, "reason": reason})

    try:
        if everything:
            report = warming.warm_everything(cache, runtime.source, progress=progress)
        else:
            report = warming.warm_critical(
                cache, runtime.source, hottest=settings.cache_autowarm_hottest, progress=progress
            )
    finally:
        lease.release()
    answer |= {"warmed": True, **report.as_dict()}
    last = {**holder, "finished_at": time.time(), "result": answer}
    try:
        durable.set(warmstate.last_key(cache.keys), warmstate.encoded(last))
    except RedisError as exc:  # the warm-up is done; only its record is lost
        log.warning("last warm-up not recorded: %s", exc)
    return answer


@shared_task(bind=True, **routing.task_options(routing.WATCH_REDIS, retry_on=()))
def watch_redis(self: Task[Any, Any]) -> dict[str, Any]:
    """Compare the cache server's identity with the last seen; a change sends auto_warm."""
    runtime = runtime_of(self)
    cache, settings = runtime.cache, runtime.settings
    try:
        identity = redis_identity(cache, settings.redis_sentinel_master)
        raw = runtime.worker.services.redis("durable").set(
            warmstate.identity_key(cache.keys), warmstate.encoded(identity), get=True
        )
    except (CacheUnavailable, RedisError) as exc:
        # The next tick looks again; a restart is noticed once Redis answers.
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}
    previous = warmstate.decoded(raw if isinstance(raw, bytes | str) else None)
    reason = identity_change(previous, identity)
    answer: dict[str, Any] = {"reachable": True, "identity": identity, "changed": reason}
    if reason is not None and settings.cache_autowarm:
        answer["warmup"] = send_auto_warm(self, reason)
    return answer
