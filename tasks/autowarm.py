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
Such a warm-up fills what the new server lacks: the missing keys, and a lagging kind's only
when the server lost its data (:func:`after_server_change`); the result names the kinds left
to their readers (``left_to_readers``).

A Redis that cannot be reached makes the task retry (CacheUnavailable, with backoff); the
API never waits for any of this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from celery import Task, shared_task
from redis.exceptions import RedisError

from cache import CacheService
from cache.errors import CacheUnavailable
from cache.flow import UNAVAILABLE
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Kind, Warm
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

Variant = tuple[Any, ...]  # a kind's parameter values (Kind.variants)


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


def after_server_change(missing: Mapping[Kind, Sequence[Variant]]) -> dict[Kind, list[Variant]]:
    """The critical variants a warm-up after a restart or failover computes, of those whose
    current key is missing: all of them when the server lost its data, else none of a
    lagging kind's.

    The server kept its data when no key of a kind that never lags is missing (the lookups:
    no member change retires them). A lagging kind's current key is then missing only
    because a member change retired it, which happens a few times a second; its readers are
    served the last value within the kind's lag while one recompute runs behind them
    (api_stub.lagging), so recomputing it here only doubles that work. At 1,000,000
    members the dashboard alone is 3.6 s of a database core on an idle machine, and the
    replay's failover warm-up held 1.1 cores for 8 s after the promotion.
    """
    kept = not any(variants for kind, variants in missing.items() if not kind.lag)
    return {
        kind: list(variants)
        for kind, variants in missing.items()
        if variants and not (kept and kind.lag)
    }


# --- reads ----------------------------------------------------------------------------------------
def _missing(cache: CacheService) -> list[tuple[Kind, Variant, str]]:
    """Each variant of a ``Warm.CRITICAL`` kind whose current key Redis does not hold."""
    wanted: dict[str, tuple[Kind, Variant]] = {}
    for kind in KINDS.warmed(Warm.CRITICAL):
        gens = generations_sync(cache, kind.tags)
        if gens is None:
            raise CacheUnavailable(f"could not read the generations of {kind.name}")
        for key, params in kind.variant_keys(cache.keys, gens).items():
            wanted[key] = (kind, params)

    def exists(keys: list[str]) -> list[Any]:
        pipe = cache.clients.writer.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return list(pipe.execute())

    found = cache.run(exists, list(wanted))
    if found is UNAVAILABLE:
        raise CacheUnavailable("could not check the critical keys")
    return [
        (kind, params, key)
        for (key, (kind, params)), there in zip(wanted.items(), found, strict=True)
        if not there
    ]


def missing_critical(cache: CacheService) -> list[str]:
    """The current keys of the ``Warm.CRITICAL`` kinds that Redis does not hold."""
    return [key for _kind, _params, key in _missing(cache)]


def missing_by_kind(cache: CacheService) -> dict[Kind, list[Variant]]:
    """The variants of each ``Warm.CRITICAL`` kind whose current key Redis does not hold."""
    missing: dict[Kind, list[Variant]] = {kind: [] for kind in KINDS.warmed(Warm.CRITICAL)}
    for kind, params, _key in _missing(cache):
        missing[kind].append(params)
    return missing


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

    only = None
    try:
        if everything:
            answer["duty"] = settings.cache_autowarm_duty
            report = warming.warm_everything(
                cache, runtime.source, progress=progress, duty=settings.cache_autowarm_duty
            )
        else:
            if reason in routing.SERVER_CHANGE_REASONS:
                lacking = missing_by_kind(cache)
                only = after_server_change(lacking)
                answer["left_to_readers"] = sorted(
                    kind.name for kind, variants in lacking.items() if variants and kind not in only
                )
            report = warming.warm_critical(
                cache,
                runtime.source,
                hottest=settings.cache_autowarm_hottest,
                progress=progress,
                only=only,
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
