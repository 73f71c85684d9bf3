"""Member activity, written behind: POST answers once Redis has it, GET reads the counters.

    POST /api/v1/members/{id}/activity   {"kind", "at"?, "times"?} or {"events": [...]}
    GET  /api/v1/members/{id}/activity   the cached counters per day and last_seen_at

The events reach PostgreSQL through the write-behind flush (cache/writebehind, a Celery task
on cache.writebehind), exactly once. Past the backlog limit the API answers 503 with
Retry-After instead of accepting what it could lose; so it does, with WRITEBEHIND_REPLICAS set,
when fewer replicas than that confirmed the events (a failover would lose them).

The buffer and its asyncio recorder are the process's (services.Services ``writebehind`` and
``recorder``), read from ``app.state.running``; :func:`install` adds the routes and
:class:`ActivityFastPath`.

The POST is the hot write: :class:`ActivityFastPath` answers it the way the caching
middleware answers a cached GET, as pure ASGI before FastAPI's routing, dependencies and
response rendering (those cost about 1 ms a request, more than recording the event):
the body is validated in one ``TypeAdapter.validate_json`` of the route's own models, the
events are recorded by the recorder (one script call shared by the requests in flight,
no database), and the answer is orjson bytes. Anything it does not handle as well as the
route does (a body that does not validate, is not JSON or is large, a request header the
route reads) goes to the route with its body unread, so errors and every other behaviour
stay the route's.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import APIRouter, Body, FastAPI, HTTPException, Path, Request
from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_stub.runtime import running, started
from cache.errors import CacheUnavailable
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
    Backpressure,
    InvalidEvent,
    NotReplicated,
)

router = APIRouter(prefix="/api/v1/members", tags=["activity"])
MemberId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class ActivityIn(BaseModel):
    kind: Literal["login", "checkin", "page_view"]
    at: AwareDatetime | None = None  # when it happened; now when absent
    times: int = Field(1, ge=1, le=10_000)


class ActivityBatch(BaseModel):
    events: list[ActivityIn] = Field(min_length=1, max_length=1000)


ActivityBody = ActivityIn | ActivityBatch
MAX_MEMBER_ID: Final = 2**63 - 1


def _recorder(request: Request) -> AsyncGroupRecorder:
    recorder = running(request).services.recorder
    if recorder is None:
        raise RuntimeError("the API's services are opened with asyncio=True")
    return recorder


@router.post("/{member_id}/activity", status_code=202)
async def record_activity(
    request: Request,
    member_id: MemberId,
    body: Annotated[ActivityBody, Body()],
) -> dict[str, Any]:
    return await record(_recorder(request), member_id, body)


async def record(
    recorder: AsyncGroupRecorder, member_id: int, body: ActivityBody
) -> dict[str, Any]:
    """Record the body's events; the answer, or HTTPException (422, 503) naming why not."""
    given = body.events if isinstance(body, ActivityBatch) else [body]
    events = [ActivityEvent(member_id, e.kind, e.at, e.times) for e in given]
    try:
        ids = await recorder.record(events)
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
        return await run_in_threadpool(running(request).services.writebehind.activity, member_id)
    except CacheUnavailable as exc:
        raise HTTPException(503, detail="activity store unavailable") from exc


_PATH: Final = re.compile(r"/api/v1/members/([1-9][0-9]{0,18})/activity")
_BODY: Final = TypeAdapter[ActivityBody](ActivityBody)
MAX_FAST_BODY: Final = 64 * 1024  # a batch of 1,000 events fits; larger goes to the route
# Request headers the route gives a meaning to (none yet): such a request goes to the route.
ROUTE_HEADERS: Final[frozenset[bytes]] = frozenset()
_ACCEPTED: Final = [(b"content-type", b"application/json")]


class ActivityFastPath:
    """Pure ASGI: ``POST /api/v1/members/{id}/activity`` recorded before FastAPI's routing
    (see the module docstring); every other request, and any POST it declines, goes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            _PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        services = started(scope["app"]) if found is not None and "app" in scope else None
        recorder = services.services.recorder if services is not None else None
        if found is None or recorder is None or self._declined(scope):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more and size <= MAX_FAST_BODY:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(chunk := message.get("body", b""))
            size += len(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        member_id = int(found.group(1))
        parsed: ActivityBody | None = None
        if not more and member_id <= MAX_MEMBER_ID:
            try:
                parsed = _BODY.validate_json(body)
            except ValidationError:
                parsed = None
        if parsed is None:  # the route answers it (422 with its errors), its body replayed
            await self.app(scope, _replay(body, more, receive), send)
            return
        try:
            answer, status, headers = await record(recorder, member_id, parsed), 202, _ACCEPTED
        except HTTPException as exc:
            answer, status = {"detail": exc.detail}, exc.status_code
            extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            headers = [*_ACCEPTED, *extra]
        payload = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _declined(scope: Scope) -> bool:
        json_body = False
        for name, value in scope["headers"]:
            if name in ROUTE_HEADERS:
                return True
            if name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
        return not json_body


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` that hands out the body already read, then the rest of the stream."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed


def install(app: FastAPI) -> None:
    """Add the activity routes and their fast path; they use the process's write-behind
    buffer (app.state.running)."""
    app.include_router(router)
    app.add_middleware(ActivityFastPath)
