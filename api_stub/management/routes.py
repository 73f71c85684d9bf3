"""The management routes under /api/v1/cache (roles in api_stub.management.auth).

    GET    /health                 200 healthy, 503 naming the failing checks
    GET    /metrics                live counters and the latest snapshot
    GET    /metrics/history        stored snapshots of a time range
    GET    /prometheus             the same figures as Prometheus text
    DELETE /clear?pattern=&dry_run=  SCAN + UNLINK under the prefix (admin); a clear that
                                   removed entries sends the automatic warm-up
    POST   /warmup                 enqueue a warm-up: 202 and its task id (operator)
    GET    /warmup/current         the automatic warm-up running now (and the last one)
    GET    /warmup/{task_id}       state and progress of a task
    POST   /invalidation/trigger   member ids, tags, a data type or a bulk event (optionally
                                   with its member ids): 202 (operator)
    GET    /reports                the maintenance reports
    GET    /dead-letters           write-behind events that could not be written
    POST   /dead-letters/replay    re-queue some of them (operator)
    GET    /kinds                  the cached kinds (cache.kinds) with their TTLs
    GET    /audit                  the audit trail (admin)

Actions (clear, warm-up, invalidation, replay) are recorded in the audit trail before they
run and closed with their outcome (api_stub.management.audit).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.responses import PlainTextResponse
from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api_stub.management import figures as figures_
from api_stub.management import health as health_
from api_stub.management import prometheus
from api_stub.management.audit import Errors
from api_stub.management.auth import Principal, Role
from api_stub.management.clear import MAX_PATTERN, Cleared, PatternRefused, clear, hot_members
from api_stub.management.guard import Admin, Management, Viewer, acting
from api_stub.management.runtime import ManagementRuntime
from api_stub.management.schemas import (
    STREAM_ID,
    DateTime,
    InvalidationRequest,
    Job,
    ReplayRequest,
    WarmupRequest,
    valid_stream_id,
)
from api_stub.problems import (
    BROKER_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    REDIS_UNAVAILABLE,
    WRITEBEHIND_UNAVAILABLE,
    invalid_field,
    responses,
)
from api_stub.routes import json_response
from cache import DataType, invalidation
from cache.errors import CacheError, CacheUnavailable
from cache.kinds import KINDS, WARMUPS
from db import reports
from workers import warmstate
from workers.routing import MAX_IDS

PREFIX: Final = "/api/v1/cache"
TASK_ID: Final = r"^[A-Za-z0-9\-]{1,64}$"
LABEL: Final = r"^[A-Za-z0-9_.\-]{1,64}$"
BROKER_TIMEOUT_S: Final = 5.0
# The warm-up sent after a clear is one LPUSH; a broker slower than this is reported in the
# clear's answer, and the clear (already done) is not held up for it.
AUTOWARM_SEND_TIMEOUT_S: Final = 1.0
MAX_HISTORY: Final = dt.timedelta(days=31)  # a month of minute snapshots: ~45k rows read

router = APIRouter(prefix=PREFIX, tags=["cache management"])
T = TypeVar("T")


async def _broker(call: Callable[[], T], timeout: float = BROKER_TIMEOUT_S) -> T:
    """Run a producer call (enqueue, progress, ping) in the threadpool, bounded in time."""
    try:
        return await asyncio.wait_for(run_in_threadpool(call), timeout)
    except (BrokerUnavailable, OSError, TimeoutError) as exc:
        raise BROKER_UNAVAILABLE(f"the task broker is unavailable: {type(exc).__name__}") from exc


# --- observing ----------------------------------------------------------------------------------
@router.get(
    "/health",
    summary="Health of Redis, workers, beat and the cache",
    responses={
        503: {
            "description": "some checks fail: the same report, naming them",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def get_health(_who: Viewer, m: Management) -> Response:
    answer = await health_.health(m)
    return json_response(answer, 200 if answer["status"] == "ok" else 503)


@router.get("/metrics", summary="Hit rates, latency, errors, memory, key distribution")
async def get_metrics(_who: Viewer, m: Management) -> Response:
    return json_response(figures_.json_safe(await figures_.figures(m)))


@router.get(
    "/metrics/history",
    summary="Stored metrics snapshots, oldest first",
    responses=responses(DATABASE_UNAVAILABLE),
)
async def get_metrics_history(
    _who: Viewer,
    m: Management,
    since: Annotated[DateTime | None, Query(description="default: an hour before until")] = None,
    until: Annotated[DateTime | None, Query(description="default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=1440)] = 120,
) -> Response:
    try:
        end = _utc(until) if until is not None else dt.datetime.now(dt.UTC)
        start = _utc(since) if since is not None else end - dt.timedelta(hours=1)
    except OverflowError:
        raise invalid_field(["query", "since"], "since/until out of range") from None

    if end - start > MAX_HISTORY:
        raise invalid_field(["query", "since"], f"at most {MAX_HISTORY.days} days before until")

    def read(session: Session) -> tuple[list[dict[str, Any]], int]:
        rows: list[dict[str, Any]] = []
        seen = 0
        # Streamed to the end (never left half-read: that would leave a server-side cursor
        # open); the window bounds the rows, ``limit`` what is kept.
        for snapshot in reports.iter_snapshots(session, start, end):
            seen += 1
            if len(rows) < limit:
                payload = snapshot["payload"] or {}
                rows.append(
                    {
                        "id": snapshot["id"],
                        "taken_at": snapshot["taken_at"],
                        "total": payload.get("total"),
                        "redis": payload.get("redis"),
                        "keyspace": payload.get("keyspace"),
                        # p50/p95/p99 per kind, cached vs uncached, of the interval
                        # since the previous snapshot (tasks/counters.latency_interval)
                        "latency": payload.get("latency"),
                    }
                )
        return rows, seen

    rows, seen = await m.db.read(read)
    return json_response(
        {"since": start.isoformat(), "until": end.isoformat(), "snapshots": rows,
         "truncated": seen > limit}
    )  # fmt: skip


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@router.get(
    "/prometheus", summary="The metrics as Prometheus text", response_class=PlainTextResponse
)
async def get_prometheus(_who: Viewer, m: Management) -> Response:
    document = await figures_.figures(m)
    body = prometheus.render(document, m.cache.snapshot())
    return Response(body, media_type=prometheus.CONTENT_TYPE)


@router.get(
    "/reports",
    summary="Maintenance reports, newest first",
    responses=responses(DATABASE_UNAVAILABLE),
)
async def get_reports(
    _who: Viewer,
    m: Management,
    job: Job | None = None,
    limit: Annotated[int, Query(ge=1, le=reports.MAX_LIST)] = 50,
) -> Response:
    found = await m.db.read(lambda s: reports.list_reports(s, job, limit=limit))
    return json_response({"reports": found})


@router.get(
    "/warmup/current",
    summary="The automatic warm-up running now, and the last one",
    responses=responses(REDIS_UNAVAILABLE),
)
async def get_warmup_current(_who: Viewer, m: Management) -> Response:
    """What the dashboard polls to show an automatic warm-up nobody typed: the lease's holder
    (task id, reason, worker, start) and the last finished run (workers/warmstate.py)."""
    keys = m.cache.keys
    try:
        raw_running, raw_last = await m.services.async_redis("durable").mget(
            [warmstate.lease_key(keys), warmstate.last_key(keys)]
        )
    except RedisError as exc:
        raise REDIS_UNAVAILABLE(f"warm-up state unavailable: {type(exc).__name__}") from exc
    running = warmstate.decoded(raw_running)
    if running is not None and running.get("task_id"):
        running["status_url"] = f"{PREFIX}/warmup/{running['task_id']}"
    return json_response({"running": running, "last": warmstate.decoded(raw_last)})


@router.get(
    "/warmup/{task_id}",
    summary="State and progress of a warm-up",
    responses=responses(BROKER_UNAVAILABLE),
)
async def get_warmup(
    _who: Viewer, m: Management, task_id: Annotated[str, Path(pattern=TASK_ID)]
) -> Response:
    progress = await _broker(lambda: m.tasks.progress(task_id))
    return json_response(
        {
            "task_id": progress.task_id,
            "state": progress.state,
            "ready": progress.ready,
            "done": progress.done,
            "total": progress.total,
            "fraction": progress.fraction,
            "result": progress.result if isinstance(progress.result, dict) else None,
            "error": progress.error,
        }
    )


@router.get(
    "/dead-letters",
    summary="Write-behind events that could not be written",
    responses=responses(WRITEBEHIND_UNAVAILABLE),
)
async def get_dead_letters(
    _who: Viewer,
    m: Management,
    count: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str, Query(pattern=r"^(-|[0-9]{1,20}-[0-9]{1,20})$")] = "-",
) -> Response:
    if after != "-" and not valid_stream_id(after):
        raise invalid_field(["query", "after"], "not a stream id")
    start = after if after == "-" else f"({after}"  # exclusive: page on from the last id seen
    try:
        letters = await run_in_threadpool(m.writebehind.dead_letters, count, start)
    except CacheError as exc:
        raise WRITEBEHIND_UNAVAILABLE(f"write-behind unavailable: {exc}") from exc
    return json_response({"dead_letters": letters, "count": len(letters)})


@router.get("/kinds", summary="The cached kinds: what each is, its TTL, how it is kept fresh")
async def get_kinds(_who: Viewer, m: Management) -> Response:
    policy = m.cache.policy
    kinds = [
        kind.describe()
        | {
            "ttl": policy.ttl(kind.data_type),
            "stale_window": policy.stale_window(kind.data_type),
        }
        for kind in KINDS
    ]
    return json_response(
        {
            "kinds": kinds,
            "data_types": [data_type.value for data_type in DataType],
            "warmups": list(WARMUPS),
            "invalidatable": [data_type.value for data_type in KINDS.data_types],
        }
    )


@router.get(
    "/audit", summary="The audit trail, newest first", responses=responses(DATABASE_UNAVAILABLE)
)
async def get_audit(
    _who: Admin,
    m: Management,
    who: Annotated[str | None, Query(pattern=LABEL)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    found = await m.auditor.entries(who=who, action=action, before_id=before_id, limit=limit)
    return json_response({"entries": found})


# --- acting -------------------------------------------------------------------------------------
@router.delete(
    "/clear",
    summary="Delete (or count) cache keys matching a pattern",
    responses=responses(REDIS_UNAVAILABLE),
)
async def delete_clear(
    m: Management,
    who: Annotated[Principal, acting(Role.ADMIN, "cache.clear")],
    pattern: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_PATTERN,
            description="glob under the key prefix: member:*",
        ),
    ],
    dry_run: bool = False,
) -> Response:
    arguments = {"pattern": pattern, "dry_run": dry_run}
    async with m.auditor.action(who, "cache.clear", arguments, 200, _CLEAR_ERRORS) as outcome:
        # What this process's readers read, taken before the clear empties the near tier: as
        # many as one message names (10,000 records, ~0.15 s of a worker's time). They go
        # first and are refilled at once, while the rest of the keys are scanned.
        autowarm = m.settings.cache_autowarm and not dry_run
        hot = hot_members(m.cache, pattern, MAX_IDS) if autowarm else []
        refilled: dict[str, Any] = {}

        async def refill() -> None:
            sent = await _enqueued(lambda: m.tasks.enqueue_warmup("members", hot))
            refilled.update(sent | {"members": len(hot)})

        cleared = await clear(
            m.cache,
            pattern,
            dry_run=dry_run,
            batch=m.config.clear_batch,
            duty=m.config.clear_duty,
            first=m.cache.keys.members(hot),
            refill=refill,
        )
        answer = cleared.as_dict()
        if refilled:
            answer["first"] = refilled
        if cleared.deleted and autowarm:
            answer["warmup"] = await _enqueued(lambda: m.tasks.enqueue_auto_warm("clear"))
        outcome.result = answer
    return json_response(answer)


def _clear_unavailable(exc: CacheUnavailable) -> HTTPException:
    partial = exc.args[1].as_dict() if len(exc.args) > 1 else None
    return REDIS_UNAVAILABLE(str(exc.args[0]), partial=partial)


_CLEAR_ERRORS: Final[Errors] = {
    PatternRefused: lambda exc: invalid_field(["query", "pattern"], str(exc)),
    CacheUnavailable: _clear_unavailable,
}
_REPLAY_ERRORS: Final[Errors] = {
    CacheError: lambda exc: WRITEBEHIND_UNAVAILABLE(f"write-behind unavailable: {exc}")
}


async def _enqueued(send: Callable[[], str]) -> dict[str, Any]:
    """A warm-up sent: its task id and status URL, or why it was not sent (never raised:
    what triggered it is done, and beat's checks are the fallback)."""
    try:
        task_id = await _broker(send, timeout=AUTOWARM_SEND_TIMEOUT_S)
    except HTTPException as exc:
        return {"task_id": None, "error": str(exc.detail)}
    return {"task_id": task_id, "status_url": f"{PREFIX}/warmup/{task_id}"}


@router.post(
    "/warmup",
    status_code=202,
    summary="Enqueue a warm-up",
    responses=responses(BROKER_UNAVAILABLE),
)
async def post_warmup(
    m: Management,
    who: Annotated[Principal, acting(Role.OPERATOR, "cache.warmup")],
    body: WarmupRequest,
) -> Response:
    async with m.auditor.action(who, "cache.warmup", body.model_dump(), 202) as outcome:
        task_id = await _broker(lambda: m.tasks.enqueue_warmup(body.kind, body.ids))
        answer = {"task_id": task_id, "kind": body.kind, "status_url": f"{PREFIX}/warmup/{task_id}"}
        outcome.result = {"task_id": task_id}
    return json_response(answer, 202)


@router.post(
    "/invalidation/trigger",
    status_code=202,
    summary="Invalidate what depends on a change",
    responses=responses(BROKER_UNAVAILABLE, REDIS_UNAVAILABLE),
)
async def post_invalidation(
    m: Management,
    who: Annotated[Principal, acting(Role.OPERATOR, "cache.invalidate")],
    body: InvalidationRequest,
) -> Response:
    arguments = body.model_dump(exclude_none=True)
    async with m.auditor.action(who, "cache.invalidate", arguments, 202) as outcome:
        answer: dict[str, Any] = {"accepted": next(iter(arguments))}
        if body.member_ids is not None:
            # Their keys and the member tags now, in one round trip; the aggregates computed
            # from members by the workers' invalidation task.
            answer["applied"] = await invalidation.members_imported(m.cache, body.member_ids)
            count = len(body.member_ids)
            answer["task_ids"] = await _broker(
                lambda: m.tasks.enqueue_bulk_operation("update", count)
            )
        elif body.tags is not None:
            answer["applied"] = await invalidation.bump(m.cache, body.tags)
            answer["tags"] = list(body.tags)
        elif body.data_type is not None:
            # Its keys (Keys.entry) and the tags of its kinds, so responses derived go too.
            data_type = DataType(body.data_type)
            answer["applied"] = await invalidation.bump(m.cache, KINDS.tags_of_type(data_type))
            answer["cleared"] = (await _clear_or_503(m, f"{data_type.value}:*")).as_dict()
        elif body.bulk is not None:
            # The aggregates, and the named members' records, by the workers' task.
            bulk = body.bulk
            answer["task_ids"] = await _broker(
                lambda: m.tasks.enqueue_bulk_operation(
                    bulk.kind, bulk.affected_count, bulk.member_ids
                )
            )
        outcome.result = answer
    return json_response(answer, 202)


async def _clear_or_503(m: ManagementRuntime, glob: str) -> Cleared:
    try:
        return await clear(
            m.cache, glob, dry_run=False, batch=m.config.clear_batch, duty=m.config.clear_duty
        )
    except CacheUnavailable as exc:
        raise REDIS_UNAVAILABLE(f"Redis unavailable: {exc.args[0]}") from exc


@router.post(
    "/dead-letters/replay",
    summary="Re-queue dead-lettered write-behind events",
    responses=responses(WRITEBEHIND_UNAVAILABLE),
)
async def post_replay(
    m: Management,
    who: Annotated[Principal, acting(Role.OPERATOR, "writebehind.replay")],
    body: ReplayRequest,
) -> Response:
    arguments = {"ids": body.ids}
    async with m.auditor.action(
        who, "writebehind.replay", arguments, 200, _REPLAY_ERRORS
    ) as outcome:
        new_ids = await run_in_threadpool(m.writebehind.replay, body.ids)
        answer = {"requested": len(body.ids), "replayed": len(new_ids), "new_ids": new_ids}
        outcome.result = {"requested": len(body.ids), "replayed": len(new_ids)}
    return json_response(answer)


__all__ = ["PREFIX", "STREAM_ID", "router"]
