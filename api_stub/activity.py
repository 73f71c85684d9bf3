"""Member activity, written behind: POST answers once Redis has it, GET reads the counters.

    POST /api/v1/members/{id}/activity   {"kind", "at"?, "times"?} or {"events": [...]}
    GET  /api/v1/members/{id}/activity   the cached counters per day and last_seen_at

The events reach PostgreSQL through the write-behind flush (cache/writebehind, a Celery task
on cache.writebehind), exactly once. Past the backlog limit the API answers 503 with
Retry-After instead of accepting what it could lose; so it does, with WRITEBEHIND_REPLICAS set,
when fewer replicas than that confirmed the events (a failover would lose them).

The buffer and its asyncio recorder are the process's (services.Services ``writebehind`` and
``recorder``), read from ``app.state.running``; :func:`install` only adds the routes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, Request
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api_stub.problems import WRITEBEHIND_UNAVAILABLE, invalid_field, responses
from api_stub.routes import MemberId
from api_stub.runtime import running
from cache.errors import CacheUnavailable
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
    Backpressure,
    InvalidEvent,
    NotReplicated,
)

router = APIRouter(prefix="/api/v1/members", tags=["activity"])


class ActivityIn(BaseModel):
    kind: Literal["login", "checkin", "page_view"]
    at: AwareDatetime | None = None  # when it happened; now when absent
    times: int = Field(1, ge=1, le=10_000)


class ActivityBatch(BaseModel):
    events: list[ActivityIn] = Field(min_length=1, max_length=1000)


def _recorder(request: Request) -> AsyncGroupRecorder:
    recorder = running(request).services.recorder
    if recorder is None:
        raise RuntimeError("the API's services are opened with asyncio=True")
    return recorder


@router.post("/{member_id}/activity", status_code=202, responses=responses(WRITEBEHIND_UNAVAILABLE))
async def record_activity(
    request: Request,
    member_id: MemberId,
    body: Annotated[ActivityIn | ActivityBatch, Body()],
) -> dict[str, Any]:
    given = body.events if isinstance(body, ActivityBatch) else [body]
    events = [ActivityEvent(member_id, e.kind, e.at, e.times) for e in given]
    try:
        ids = await _recorder(request).record(events)
    except InvalidEvent as exc:
        raise invalid_field(["body"], str(exc)) from exc
    except NotReplicated as exc:
        # Retry-After only when nothing was recorded: a retry of recorded events may count
        # them twice, and the detail says so.
        retry = {} if exc.recorded else {"Retry-After": "1"}
        raise WRITEBEHIND_UNAVAILABLE(str(exc), headers=retry) from exc
    except Backpressure as exc:
        raise WRITEBEHIND_UNAVAILABLE(str(exc), headers={"Retry-After": "1"}) from exc
    except CacheUnavailable as exc:
        raise WRITEBEHIND_UNAVAILABLE("activity store unavailable") from exc
    return {"accepted": len(ids), "ids": ids}


@router.get("/{member_id}/activity", responses=responses(WRITEBEHIND_UNAVAILABLE))
async def read_activity(request: Request, member_id: MemberId) -> dict[str, Any]:
    try:
        return await run_in_threadpool(running(request).services.writebehind.activity, member_id)
    except CacheUnavailable as exc:
        raise WRITEBEHIND_UNAVAILABLE("activity store unavailable") from exc


def install(app: FastAPI) -> None:
    """Add the activity routes; they use the process's write-behind buffer (app.state.running)."""
    app.include_router(router)
