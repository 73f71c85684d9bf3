"""A warm-up of every member split over the worker processes: a chord of chunk tasks.

``warmup_data_type("member")`` and ``warmup_all`` with more members than
``Settings.cache_warmup_chunk_size`` call :func:`start`, which replaces the task with a Celery
chord (the canvas, not a loop of sends)::

    chord(warmup_chunk(run, after, upto) for each id range)  |  warmup_finish(run)

Every worker process consuming cache.warmup takes chunks, so N processes warm about N times
faster; the id ranges come from the lowest and highest member id (two index lookups), the
last range is open so members created meanwhile are warmed too.

Reported as one warm-up, as before:

- the chord's body inherits the task id (``Task.replace``), so the id the client, Flower,
  the management API (``GET /warmup/{task_id}``) and the dashboard follow ends SUCCESS with the
  summed report (``total``, ``done``, ``written``, ``present``, ``missing``, ``retracted``,
  ``seconds``);
- meanwhile each chunk adds its pages to one progress hash in Redis (workers/warmstate.py
  ``run_key``: HINCRBY, so concurrent chunks count once each) and writes the sum as that id's
  PROGRESS state (done/total);
- one warm-up at a time across workers still holds: the run takes the warm-up lease
  (workers/warmstate.py, the one tasks/autowarm.py takes) under its own task id, every chunk
  renews it with each page, the finish releases it, so ``GET /warmup/current`` names the run
  and an automatic warm-up sent meanwhile answers ``skipped: running``. A second large
  warm-up is skipped the same way.

A chunk that hits a connection error retries (its pages are written again, harmlessly: SET
NX); progress may then count them twice, so it is capped at the total. A chunk that fails for
good fails the chord: the id ends FAILURE and the lease lapses after
``cache_autowarm_lease_s``.
"""

from __future__ import annotations

import time
from typing import Any, Final

from celery import Task, chord, group, shared_task
from redis.exceptions import RedisError

from cache.errors import CacheUnavailable
from db.errors import DatabaseUnavailable
from tasks import warming
from tasks.runtime import TaskRuntime, runtime_of
from workers import routing, warmstate
from workers.scheduler import LeaderLease

RETRY_ON: Final = (CacheUnavailable, DatabaseUnavailable)
# The progress hash outlives any run (its chunks' hard limits) and then goes by itself.
RUN_TTL_S: Final = 6 * 3600
COUNTS: Final = ("done", "written", "present", "missing", "retracted")


def _lease(runtime: TaskRuntime, run: dict[str, Any], *, held: bool) -> LeaderLease:
    keys = runtime.cache.keys
    return LeaderLease(
        runtime.worker.services.redis("durable"),
        warmstate.lease_key(keys),
        float(runtime.settings.cache_autowarm_lease_s),
        token=warmstate.encoded(run["holder"]),
        held=held,
    )


def start(
    task: Task[Any, Any], *, aggregates: bool, reason: str = routing.MANUAL
) -> dict[str, Any] | None:
    """Replace ``task`` with the chord when every member is more than one chunk (this call
    does not return then); None when one task is enough; ``skipped`` when another warm-up
    holds the lease."""
    runtime = runtime_of(task)
    source, settings = runtime.source, runtime.settings
    plan = warming.member_chunks(source.member_id_bounds(), settings.cache_warmup_chunk_size)
    if len(plan) <= 1:
        return None
    run_id = str(task.request.id or "")
    holder = warmstate.holder(run_id, reason, task.request.hostname)
    total = source.count_members() + (warming.aggregate_count() if aggregates else 0)
    # A warm-up the platform sends itself runs beside readers: paced.
    duty = 1.0 if reason == routing.MANUAL else settings.cache_autowarm_duty
    run = {"id": run_id, "holder": holder, "total": total, "aggregates": aggregates, "duty": duty}
    lease = _lease(runtime, run, held=False)
    if not lease.hold():
        other = warmstate.held_by(runtime.worker.services.redis("durable"), runtime.cache.keys)
        return {"warmed": False, "skipped": "running", "by": other}
    task.update_state(state="PROGRESS", meta={"done": 0, "total": total, "chunks": len(plan)})
    chunks = group(warmup_chunk.si(run, after, upto) for after, upto in plan)
    task.replace(chord(chunks, warmup_finish.s(run)))  # raises Ignore: replaced by the chord
    raise AssertionError("Task.replace returned")


def _progress(task: Task[Any, Any], runtime: TaskRuntime, run: dict[str, Any]) -> warming.Progress:
    """Add a chunk's pages to the run's sum and report the sum under the run's task id."""
    durable = runtime.worker.services.redis("durable")
    key = warmstate.run_key(runtime.cache.keys, run["id"])
    lease = _lease(runtime, run, held=True)
    total, seen = int(run["total"]), [0]

    def report(done: int, _total: int) -> None:
        step, seen[0] = done - seen[0], done
        pipe = durable.pipeline(transaction=False)
        pipe.hincrby(key, "done", step)
        pipe.expire(key, RUN_TTL_S)
        try:
            summed = int(pipe.execute()[0])
        except RedisError as exc:  # the warm-up goes on; only its progress is late
            raise CacheUnavailable(f"warm-up progress: {exc}") from exc
        lease.hold()  # renewed at most once a second; lost means it lapsed: finish anyway
        meta = {"done": min(summed, total), "total": total}
        task.update_state(task_id=run["id"], state="PROGRESS", meta=meta)

    return report


@shared_task(bind=True, **routing.task_options(routing.WARMUP_CHUNK, retry_on=RETRY_ON))
def warmup_chunk(
    self: Task[Any, Any], run: dict[str, Any], after: int, upto: int | None
) -> dict[str, Any]:
    """The members with ``after`` < id <= ``upto`` of the run; this chunk's counts."""
    runtime = runtime_of(self)
    report = warming.warm_member_range(
        runtime.cache,
        runtime.source,
        int(after),
        None if upto is None else int(upto),
        progress=_progress(self, runtime, run),
        duty=float(run.get("duty", 1.0)),  # a run sent before pacing existed: unpaced
    )
    return report.as_dict() | {"worker": str(self.request.hostname or "")}


@shared_task(bind=True, **routing.task_options(routing.WARMUP_FINISH, retry_on=RETRY_ON))
def warmup_finish(
    self: Task[Any, Any], results: list[dict[str, Any]], run: dict[str, Any]
) -> dict[str, Any]:
    """The chord's body: the aggregates (warmup_all), the summed report, the lease released."""
    runtime = runtime_of(self)
    report = warming.WarmReport(started=time.monotonic())
    for field in COUNTS:
        setattr(report, field, sum(int(result.get(field, 0)) for result in results))
    report.total = report.done
    if run["aggregates"]:
        report.total += warming.aggregate_count()
        warming.warm_aggregates(runtime.cache, runtime.source, report)
    answer = report.as_dict() | {
        "reason": run["holder"]["reason"],
        "warmed": True,
        "seconds": round(time.time() - float(run["holder"]["started_at"]), 3),
        "chunks": len(results),
        "duty": float(run.get("duty", 1.0)),
        "workers": len({result.get("worker") for result in results}),
    }
    durable = runtime.worker.services.redis("durable")
    keys = runtime.cache.keys
    _lease(runtime, run, held=True).release()
    last = {**run["holder"], "finished_at": time.time(), "result": answer}
    try:
        pipe = durable.pipeline(transaction=False)
        pipe.delete(warmstate.run_key(keys, run["id"]))
        pipe.set(warmstate.last_key(keys), warmstate.encoded(last))
        pipe.execute()
    except RedisError:  # the warm-up is done; its record is late (the hash expires)
        pass
    return answer
