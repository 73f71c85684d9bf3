"""The routes under /api/v1: members, the bulk import, analytics, statistics and lookups.

GET routes are cached by api_stub.caching (see the ``cached`` marks, each naming its kind in
cache.kinds); their bodies here run only on a miss. The aggregates and lookups are data
entries under the keys the Celery warm-up fills (``Kind.key``, generations included), so a
warmed cache answers them without running the route.
Writes commit first, then tell the cache (cache.invalidation), so a reader never caches what a
rolled-back write did, then the consistency monitor (cache.consistency: a sampled share).
Bodies are rendered with orjson, the encoding of cached documents, so a miss and a later hit
answer the same bytes and the same ETag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.orm import Session

from api_stub import imports
from api_stub.caching import cached
from api_stub.lagging import wants_current
from api_stub.problems import CONFLICT, INVALID, NOT_FOUND, TOO_LARGE, responses
from api_stub.runtime import Running, running
from api_stub.schemas import BulkUpdate, MemberCreate, MemberPatch, MemberReplace
from cache import invalidation
from cache.kinds import KINDS, Change
from db import analytics, queries

PREFIX = "/api/v1"
router = APIRouter(prefix=PREFIX)
Run = Annotated[Running, Depends(running)]
MemberId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # the column is a bigint
MEMBER_COUNT: Final = KINDS["member_count"]


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


async def _sample(run: Running, change: Change, written: Iterable[tuple[int, int | None]]) -> None:
    """Hand an acknowledged write to the consistency monitor (a sampled share of writes;
    one pipelined step when sampled, nothing otherwise)."""
    services = run.services
    await services.consistency.arecord(services.async_redis("durable"), change, written)


# --- members -----------------------------------------------------------------------------------
# The links let a client (and the stateful fuzzing) follow a created member to its routes.
_CREATED_MEMBER: Final = {
    operation: {"operationId": operation, "parameters": {"member_id": "$response.body#/id"}}
    for operation in ("get_member", "replace_member", "patch_member", "delete_member")
}


@router.get("/members/{member_id:int}", operation_id="get_member", responses=responses(NOT_FOUND))
@cached("member")
async def get_member(member_id: MemberId, run: Run) -> Response:
    member = await run.db.query(lambda session: queries.get_member(session, member_id))
    if member is None:
        raise NOT_FOUND()  # cached briefly (negative caching)
    return json_response(member)


@router.get("/members")
@cached("member_list")
async def list_members(
    run: Run,
    request: Request,
    status: Annotated[str | None, Query(max_length=16)] = None,
    tier: Annotated[str | None, Query(max_length=16)] = None,
    country: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
) -> Response:
    # The page is read now; its total may lag a change by member_count's lag (cache.kinds),
    # unless the request asks for now (a reload: Cache-Control no-cache).
    filters: dict[str, str | None] = {"status": status, "tier": tier, "country": country, "q": q}

    async def count() -> int:
        return await run.db.query(lambda session: queries.count_members(session, **filters))

    total = await run.lagging.get(
        run.cache,
        MEMBER_COUNT,
        (_digest(filters),),
        count,
        current=wants_current(dict(request.scope["headers"])),
    )
    found = await run.db.query(
        lambda session: queries.list_members(
            session, **filters, page=page, page_size=page_size, total=total
        )
    )
    return json_response(found)


def _digest(filters: Mapping[str, str | None]) -> str:
    """A key part naming a set of list filters (the country as the query compares it)."""
    normal = dict(filters, country=(filters.get("country") or "").upper() or None)
    return hashlib.sha256(orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


Selector = Annotated[str | None, Query(min_length=1, max_length=16)]


@router.patch("/members")
async def bulk_update_members(
    body: BulkUpdate,
    run: Run,
    status: Selector = None,
    tier: Selector = None,
    country: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
) -> Response:
    """Set status or tier of every member with the given status, tier and country (at least
    one); their cached records and the aggregates go in one Redis round trip."""
    where = {"status": status, "tier": tier, "country": country}
    ids = await run.db.write(
        lambda session: queries.bulk_update_members(session, where, body.values())
    )
    if ids:
        await invalidation.members_changed(run.cache, ids, Change.BULK_UPDATE)
        await _sample(run, Change.BULK_UPDATE, ((i, None) for i in ids))
    return json_response({"updated": len(ids)})


@router.delete("/members")
async def bulk_delete_members(
    run: Run,
    status: Selector = None,
    tier: Selector = None,
    country: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
) -> Response:
    """Delete every member with the given status, tier and country (at least one)."""
    where = {"status": status, "tier": tier, "country": country}
    ids = await run.db.write(lambda session: queries.bulk_delete_members(session, where))
    if ids:
        await invalidation.members_changed(run.cache, ids, Change.BULK_DELETE)
        await _sample(run, Change.BULK_DELETE, ((i, None) for i in ids))
    return json_response({"deleted": len(ids)})


@router.post(
    "/members",
    status_code=201,
    operation_id="create_member",
    responses={201: {"description": "Created", "links": _CREATED_MEMBER}, **responses(CONFLICT)},
)
async def create_member(body: MemberCreate, run: Run) -> Response:
    member = await run.db.write(lambda session: queries.create_member(session, body.values()))
    await invalidation.member_saved(run.cache, member)
    await _sample(run, Change.CREATE, [(member["id"], member["version"])])
    location = f"{PREFIX}/members/{member['id']}"
    return json_response(member, 201, {"location": location})


@router.put(
    "/members/{member_id:int}",
    operation_id="replace_member",
    responses=responses(NOT_FOUND, CONFLICT),
)
async def replace_member(member_id: MemberId, body: MemberReplace, run: Run) -> Response:
    return await _update(run, member_id, body.values(), body.version)


@router.patch(
    "/members/{member_id:int}",
    operation_id="patch_member",
    responses=responses(NOT_FOUND, CONFLICT),
)
async def patch_member(member_id: MemberId, body: MemberPatch, run: Run) -> Response:
    return await _update(run, member_id, body.values(), body.version)


async def _update(
    run: Running, member_id: int, values: dict[str, Any], version: int | None
) -> Response:
    member = await run.db.write(
        lambda session: queries.update_member(session, member_id, values, expected_version=version)
    )
    if member is None:
        raise NOT_FOUND()
    if values:  # an empty PATCH changes nothing: nothing to invalidate
        await invalidation.member_saved(run.cache, member)
        await _sample(run, Change.UPDATE, [(member["id"], member["version"])])
    return json_response(member)


@router.delete(
    "/members/{member_id:int}",
    status_code=204,
    operation_id="delete_member",
    responses=responses(NOT_FOUND),
)
async def delete_member(member_id: MemberId, run: Run) -> Response:
    gone = await run.db.write(lambda session: queries.delete_member(session, member_id))
    if gone is None:
        raise NOT_FOUND()
    await invalidation.member_deleted(run.cache, gone["id"], gone["version"])
    await _sample(run, Change.DELETE, [(gone["id"], gone["version"] + 1)])
    return Response(status_code=204)


@router.post("/members/import", status_code=201, responses=responses(INVALID, TOO_LARGE, CONFLICT))
async def import_members(
    request: Request,
    run: Run,
    partial: Annotated[bool, Query(description="import the good rows, skip the bad")] = False,
) -> Response:
    """JSON lines or CSV. Bad rows are reported by line; none is imported unless ``partial``."""
    parsed = imports.parse(await request.body(), request.headers.get("content-type", ""))

    def work(session: Session) -> tuple[list[int], list[imports.BadRow]]:
        bad = sorted([*parsed.bad, *imports.check(session, parsed.rows)], key=_line)
        if bad and not partial:
            return [], bad
        lines = {row.line for row in bad}
        good = [row.values for row in parsed.rows if row.line not in lines]
        return queries.insert_members(session, good), bad

    ids, bad = await run.db.write(work)
    if ids:
        # One round trip for the whole import, however many rows.
        await invalidation.members_imported(run.cache, ids)
        await _sample(run, Change.IMPORT, ((i, 1) for i in ids))
    answer: dict[str, Any] = {
        "imported": len(ids),
        "bad_rows": len(bad),
        "errors": [row.as_dict() for row in bad[: imports.MAX_REPORTED]],
    }
    if bad and not partial:
        raise INVALID(
            f"{len(bad)} bad row(s); nothing was imported",
            errors=[error for row in bad[: imports.MAX_REPORTED] for error in row.field_errors()],
            imported=0,
            bad_rows=len(bad),
        )
    return json_response(answer, 201 if ids else 200)


def _line(row: imports.BadRow) -> int:
    return row.line


# --- aggregates and lookups ----------------------------------------------------------------
@router.get("/analytics/dashboard")
@cached("dashboard")
async def analytics_dashboard(run: Run) -> Response:
    return json_response(await run.db.read(queries.analytics_dashboard))


@router.get("/analytics/growth")
@cached("growth")
async def member_growth(run: Run) -> Response:
    return json_response(await run.db.read(analytics.member_growth))


@router.get("/statistics/demographics")
@cached("demographics")
async def demographics(run: Run) -> Response:
    return json_response(await run.db.read(queries.demographics))


@router.get("/lookups/{name}", responses=responses(NOT_FOUND))
@cached("lookup")
async def lookup(name: str, run: Run) -> Response:
    return json_response(await run.db.query(lambda session: queries.lookup(session, name)))
