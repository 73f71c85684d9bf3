"""Member activity, written behind: POST answers once Redis has it, GET reads the counters.

    POST /api/v1/members/{id}/activity   {"kind", "at"?, "times"?} or {"events": [...]}
    GET  /api/v1/members/{id}/activity   the cached counters per day and last_seen_at

The events reach PostgreSQL through the write-behind flush (cache/writebehind, a Celery task
on cache.writebehind), exactly once. Past the backlog limit the API answers 503 with
Retry-After instead of accepting what it could lose; so it does, with WRITEBEHIND_REPLICAS set,
when fewer replicas than that confirmed the events (a failover would lose them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, HTTPException, Path, Request
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cache.client import AsyncClients, SyncClients, connect, connect_async
from cache.errors import CacheUnavailable
from cache.keys import Keys
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
    Backpressure,
    InvalidEvent,
    NotReplicated,
    WriteBehind,
    WriteBehindConfig,
)
from config import Settings

router = APIRouter(prefix="/api/v1/members", tags=["activity"])
MemberId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class ActivityIn(BaseModel):
    kind: Literal["login", "checkin", "page_view"]
    at: AwareDatetime | None = None  # when it happened; now when absent
    times: int = Field(1, ge=1, le=10_000)


class ActivityBatch(BaseModel):
    events: list[ActivityIn] = Field(min_length=1, max_length=1000)


@dataclass
class _Buffer:
    sync: SyncClients
    aio: AsyncClients
    wb: WriteBehind
    recorder: AsyncGroupRecorder


def _buffer(request: Request) -> _Buffer:
    buffer: _Buffer | None = getattr(request.app.state, "activity", None)
    if buffer is None:
        raise RuntimeError("the app is not started: run it under its lifespan")
    return buffer


@router.post("/{member_id}/activity", status_code=202)
async def record_activity(
    request: Request,
    member_id: MemberId,
    body: Annotated[ActivityIn | ActivityBatch, Body()],
) -> dict[str, Any]:
    given = body.events if isinstance(body, ActivityBatch) else [body]
    events = [ActivityEvent(member_id, e.kind, e.at, e.times) for e in given]
    try:
        ids = await _buffer(request).recorder.record(events)
    except InvalidEvent as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    except NotReplicated as exc:
        # Retry-After only when nothing was recorded: a retry of recorded events may count
        # them twice, and the detail says so.
        retry = {} if exc.recorded else {"Retry-After": "1"}
        raise HTTPException(503, detail=str(exc), headers=retry) from exc
    except Backpressure as exc:
        raise HTTPException(503, detail=str(exc), headers={"Retry-After": "1"}) from exc
    except CacheUnavailable as exc:
        raise HTTPException(503, detail="activity store unavailable") from exc
    return {"accepted": len(ids), "ids": ids}


@router.get("/{member_id}/activity")
async def read_activity(request: Request, member_id: MemberId) -> dict[str, Any]:
    try:
        return await run_in_threadpool(_buffer(request).wb.activity, member_id)
    except CacheUnavailable as exc:
        raise HTTPException(503, detail="activity store unavailable") from exc


def install(app: FastAPI, settings: Settings) -> None:
    """Add the activity routes; their Redis clients live as long as the app's lifespan."""
    app.include_router(router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[Any]:
        sync, aio = connect(settings), connect_async(settings)
        wb = WriteBehind(
            sync.writer, Keys(settings.redis_key_prefix), WriteBehindConfig.from_settings(settings)
        )
        running.state.activity = _Buffer(sync, aio, wb, AsyncGroupRecorder(wb, aio.writer))
        try:
            async with inner(running) as state:
                yield state
        finally:
            running.state.activity = None
            await aio.close()
            sync.close()

    app.router.lifespan_context = lifespan
