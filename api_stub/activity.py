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
``recorder``), read from ``app.state.running``; :func:`install` only adds the routes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, FastAPI, Header, Request
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api_stub.problems import (
    WRITEBEHIND_UNAVAILABLE,
    Cause,
    invalid_field,
    responses,
)
from api_stub.routes import MemberId
from api_stub.runtime import Running, running
from cache import NOT_FOUND as ABSENT
from cache import DataType
from cache.decorator import record_version
from cache.errors import CacheUnavailable
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
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


def _recorder(request: Request) -> AsyncGroupRecorder:
    recorder = running(request).services.recorder
    if recorder is None:
        raise RuntimeError("the API's services are opened with asyncio=True")
    return recorder


async def _known(run: Running, member_id: int) -> bool:
    """Is the member there? Read through its cached record (cache-aside, as GET does)."""
    cache = run.cache

    async def load() -> Any:
        found = await run.db.read(lambda session: queries.get_member(session, member_id))
        return ABSENT if found is None else found  # an absence is cached briefly

    key = cache.keys.member(member_id)
    value = await cache.get_or_load(key, load, DataType.MEMBER, version_of=record_version)
    return value is not ABSENT


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
    body: Annotated[ActivityIn | ActivityBatch, Body()],
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    if idempotency_key is not None and not _KEY_FORM.match(idempotency_key):
        raise invalid_field(
            ["header", "Idempotency-Key"], "must be 1 to 255 visible ASCII characters"
        )
    run = running(request)
    if not await _known(run, member_id):
        raise UNKNOWN_MEMBER(f"no member {member_id}: activity not recorded")
    given = body.events if isinstance(body, ActivityBatch) else [body]
    events = [ActivityEvent(member_id, e.kind, e.at, e.times) for e in given]
    try:
        if idempotency_key is None:
            ids = await _recorder(request).record(events)
        else:
            # The key lives under the buffer's hash tag, hashed: any client text is a key part.
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            window_ms = run.services.settings.activity_idempotency_window_s * 1000
            once = await _recorder(request).record_once(
                events,
                run.cache.keys.writebehind("once", digest),
                _fingerprint(member_id, body),
                window_ms,
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
        return await run_in_threadpool(running(request).services.writebehind.activity, member_id)
    except CacheUnavailable as exc:
        raise WRITEBEHIND_UNAVAILABLE("activity store unavailable") from exc


def install(app: FastAPI) -> None:
    """Add the activity routes; they use the process's write-behind buffer (app.state.running)."""
    app.include_router(router)
