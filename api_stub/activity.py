"""Member activity, written behind: POST answers once Redis has it, GET reads the counters.

    POST /api/v1/members/{id}/activity   {"kind", "at"?, "times"?} or {"events": [...]}
    GET  /api/v1/members/{id}/activity   the cached counters per day and last_seen_at

The events reach PostgreSQL through the write-behind flush (cache/writebehind, a Celery task
on cache.writebehind), exactly once. Past the backlog limit the API answers 503 with
Retry-After instead of accepting what it could lose; so it does, with WRITEBEHIND_REPLICAS set,
when fewer replicas than that confirmed the events (a failover would lose them).

An unknown member is 404 and records nothing. The member is looked up through its cached
record (the entry GET /members/{id} and the warm-up fill, near tier included): a known,
cached member costs no database round trip; a miss loads it once under the key's lease.

``Idempotency-Key: <1-255 visible ASCII characters>`` makes a retried POST count once: the
first accepted answer is kept ACTIVITY_IDEMPOTENCY_WINDOW_S (a day) and replayed, same status
and body, to a retry with the same key; the same key with a different request (member or
body) is 422. The key's check and record and the events' record are one Redis script on the
buffer's Redis, so a crash between them cannot count twice nor lose. A refused request
(422, 503) keeps no key: its retry is a first try.

The buffer and its asyncio recorder are the process's (services.Services ``writebehind`` and
``recorder``), read from ``app.state.running``; :func:`install` adds the routes and
:class:`ActivityFastPath`.

The POST is the hot write: :class:`ActivityFastPath` answers it the way the caching
middleware answers a cached GET, as pure ASGI before FastAPI's routing, dependencies and
response rendering (those cost about 1 ms a request, more than recording the event):
the body is validated in one ``TypeAdapter.validate_json`` of the route's own models, the
events are recorded by the recorder (the requests in flight share script calls, a few
groups in flight at once while Redis answers; no database), and the answer is orjson
bytes. Anything it does not handle as well as the route does (a body that does not
validate, is not JSON or is large, a request header the route reads) goes to the route
with its body unread, so errors and every other behaviour stay the route's.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import APIRouter, Body, FastAPI, Header, HTTPException, Request
from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_stub.problems import (
    WRITEBEHIND_UNAVAILABLE,
    Cause,
    asgi_answer,
    invalid_field,
    responses,
)
from api_stub.routes import MemberId
from api_stub.runtime import Running, running, started
from cache import NOT_FOUND as ABSENT
from cache import DataType
from cache.decorator import record_version
from cache.errors import CacheUnavailable
from cache.writebehind import (
    ActivityEvent,
    Backpressure,
    InvalidEvent,
    KeyReused,
    NotReplicated,
)
from db import queries

router = APIRouter(prefix="/api/v1/members", tags=["activity"])
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retries with this key count once within ACTIVITY_IDEMPOTENCY_WINDOW_S.",
    ),
]
_KEY_FORM: Final = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the draft standard
UNKNOWN_MEMBER = Cause(404, "no member with this id; nothing is recorded", slug="unknown-member")


class ActivityIn(BaseModel):
    kind: Literal["login", "checkin", "page_view"]
    at: AwareDatetime | None = None  # when it happened; now when absent
    times: int = Field(1, ge=1, le=10_000)


class ActivityBatch(BaseModel):
    events: list[ActivityIn] = Field(min_length=1, max_length=1000)


ActivityBody = ActivityIn | ActivityBatch
MAX_MEMBER_ID: Final = 2**63 - 1


async def _known(run: Running, member_id: int) -> bool:
    """Is the member there? Read through its cached record (cache-aside, as GET does)."""
    cache = run.cache

    async def load() -> Any:
        found = await run.db.query(lambda session: queries.get_member(session, member_id))
        return ABSENT if found is None else found  # an absence is cached briefly

    key = cache.keys.member(member_id)
    fetched = await cache.fetch(key, load, DataType.MEMBER, version_of=record_version)
    return fetched.value is not ABSENT


def _fingerprint(member_id: int, body: ActivityIn | ActivityBatch) -> str:
    """What a retry must repeat: the member and the request as parsed (defaults filled in)."""
    return hashlib.sha256(f"{member_id}\n{body.model_dump_json()}".encode()).hexdigest()


@router.post(
    "/{member_id}/activity",
    status_code=202,
    responses=responses(UNKNOWN_MEMBER, WRITEBEHIND_UNAVAILABLE),
)
async def record_activity(
    request: Request,
    member_id: MemberId,
    body: Annotated[ActivityBody, Body()],
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await record(await running(request), member_id, body, idempotency_key)


async def record(
    run: Running, member_id: int, body: ActivityBody, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Record the body's events; the answer, or a problem (404, 422, 503) naming why not."""
    if idempotency_key is not None and not _KEY_FORM.match(idempotency_key):
        raise invalid_field(
            ["header", "Idempotency-Key"], "must be 1 to 255 visible ASCII characters"
        )
    if not await _known(run, member_id):
        raise UNKNOWN_MEMBER(f"no member {member_id}: activity not recorded")
    recorder = run.services.recorder
    if recorder is None:
        raise WRITEBEHIND_UNAVAILABLE("this process records no activity")
    given = body.events if isinstance(body, ActivityBatch) else [body]
    events = [ActivityEvent(member_id, e.kind, e.at, e.times) for e in given]
    try:
        if idempotency_key is None:
            ids = await recorder.record(events)
        else:
            # Hashed: any client text is a key part; the key sits on the events' partition.
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            window_ms = run.services.settings.activity_idempotency_window_s * 1000
            once = await recorder.record_once(
                events, digest, _fingerprint(member_id, body), window_ms
            )
            ids = once.ids
    except KeyReused as exc:
        detail = f"{exc}: within its window a key stands for one request; use a new key"
        raise invalid_field(["header", "Idempotency-Key"], detail) from exc
    except InvalidEvent as exc:
        raise invalid_field(["body"], str(exc)) from exc
    except NotReplicated as exc:
        # Retry-After when a retry is safe: nothing was recorded, or the Idempotency-Key
        # makes the retry replay what was; otherwise it may count them twice (the detail
        # says so).
        safe = not exc.recorded or idempotency_key is not None
        retry = {"Retry-After": "1"} if safe else {}
        raise WRITEBEHIND_UNAVAILABLE(str(exc), headers=retry) from exc
    except Backpressure as exc:
        raise WRITEBEHIND_UNAVAILABLE(str(exc), headers={"Retry-After": "1"}) from exc
    except CacheUnavailable as exc:
        raise WRITEBEHIND_UNAVAILABLE("activity store unavailable") from exc
    return {"accepted": len(ids), "ids": ids}


@router.get("/{member_id}/activity", responses=responses(WRITEBEHIND_UNAVAILABLE))
async def read_activity(request: Request, member_id: MemberId) -> dict[str, Any]:
    try:
        activity = (await running(request)).services.writebehind.activity
        return await run_in_threadpool(activity, member_id)
    except CacheUnavailable as exc:
        raise WRITEBEHIND_UNAVAILABLE("activity store unavailable") from exc


_PATH: Final = re.compile(r"/api/v1/members/([1-9][0-9]{0,18})/activity")
_BODY: Final = TypeAdapter[ActivityBody](ActivityBody)
MAX_FAST_BODY: Final = 64 * 1024  # a batch of 1,000 events fits; larger goes to the route
# Request headers only the route handles: such a request goes to the route.
ROUTE_HEADERS: Final[frozenset[bytes]] = frozenset({b"idempotency-key"})
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
        run = started(scope["app"]) if found is not None and "app" in scope else None
        if found is None or run is None or run.services.recorder is None or self._declined(scope):
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "http.request":  # the client left
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if more:  # a body in several messages (rare: a small body comes in one)
            chunks, size = [body], len(body)
            while more and size <= MAX_FAST_BODY:
                message = await receive()
                if message["type"] != "http.request":
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
            answer = await record(run, member_id, parsed)
        except HTTPException as exc:  # the document the route's handlers would send
            status, headers, payload = asgi_answer(exc, scope["path"])
        else:
            status, headers, payload = 202, _ACCEPTED, orjson.dumps(answer)
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
