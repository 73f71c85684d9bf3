"""The caching middleware against real Redis and PostgreSQL: headers, ETags, keys, staleness."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import APIRouter, FastAPI, Request, Response

from api_stub.caching import CacheMiddleware, cached
from cache import AsyncCacheService, DataType, build_cache
from cache.invalidation import MEMBER_TAGS, bump, bump_sync
from cache.kinds import Kind, Storage
from tests.api.conftest import Api, api_settings_for, serve
from tests.conftest import TEST_REDIS_DB
from tests.support.redis_procs import free_port, start_redis

pytestmark = pytest.mark.anyio

CACHED_ROUTES = [
    ("/api/v1/members/7", "private", 900, 450),
    ("/api/v1/members?status=active&page_size=5", "private", 900, 450),
    ("/api/v1/analytics/dashboard", "public", 3600, 1800),
    ("/api/v1/statistics/demographics", "public", 1800, 900),
    ("/api/v1/lookups/countries", "public", 86400, 43200),
]


@pytest.mark.parametrize(("path", "visibility", "ttl", "window"), CACHED_ROUTES)
async def test_miss_then_hit_serves_the_same_bytes_without_the_database(
    api: Api, path: str, visibility: str, ttl: int, window: int
) -> None:
    first = await api.client.get(path)
    assert first.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["cache-control"] == (
        f"{visibility}, max-age={ttl}, stale-while-revalidate={window}"
    )
    ran = len(api.statements)
    assert ran > 0

    second = await api.client.get(path)
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-type"] == "application/json"
    assert len(api.statements) == ran, "a hit must not run the route"
    max_age = int(second.headers["cache-control"].split("max-age=")[1].split(",")[0])
    assert ttl - 2 <= max_age <= ttl


async def test_if_none_match_answers_304_on_hit_and_on_miss(api: Api) -> None:
    path = "/api/v1/lookups/tiers"
    first = await api.client.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")

    hit = await api.client.get(path, headers={"if-none-match": etag})
    assert (hit.status_code, hit.headers["x-cache"], hit.content) == (304, "HIT", b"")
    assert hit.headers["etag"] == etag
    listed = await api.client.get(path, headers={"if-none-match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    other = await api.client.get(path, headers={"if-none-match": '"other"'})
    assert other.status_code == 200 and other.content == first.content

    # Evicted entry, same content: the reloaded body has the same ETag, so still 304.
    assert await api.cache.delete(api.cache.keys.lookup("tiers")) == 1
    again = await api.client.get(path, headers={"if-none-match": etag})
    assert (again.status_code, again.headers["x-cache"]) == (304, "MISS")


async def test_etag_is_the_same_in_another_process(prefix: str, database_url: str) -> None:
    """Two apps with separate keyspaces compute the body and its ETag independently (the
    second prefix lies under the first, so the fixture removes its keys too)."""
    async with (
        serve(api_settings_for(prefix, database_url)) as one,
        serve(api_settings_for(prefix + "b:", database_url)) as two,
    ):
        for path in ("/api/v1/lookups/statuses", "/api/v1/members/3"):
            a, b = await one.client.get(path), await two.client.get(path)
            assert a.headers["x-cache"] == b.headers["x-cache"] == "MISS"
            assert a.headers["etag"] == b.headers["etag"]


async def test_query_order_is_one_entry_and_values_are_separate_entries(api: Api) -> None:
    first = await api.client.get("/api/v1/members?page=2&page_size=10")
    assert first.headers["x-cache"] == "MISS"
    swapped = await api.client.get("/api/v1/members?page_size=10&page=2")
    assert swapped.headers["x-cache"] == "HIT"
    assert swapped.content == first.content
    other = await api.client.get("/api/v1/members?page_size=10&page=3")
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["items"][0]["id"] != first.json()["items"][0]["id"]


async def test_non_200_answers_are_never_stored(api: Api) -> None:
    for path, status in (
        ("/api/v1/lookups/no-such-table", 404),
        ("/api/v1/members?page=0", 422),
        ("/api/v1/members?page_size=100000", 422),
    ):
        for _ in range(2):
            answer = await api.client.get(path)
            assert (answer.status_code, answer.headers["x-cache"]) == (status, "MISS")
            assert "etag" not in answer.headers
    assert _http_keys(api) == []
    assert not await api.cache.delete(api.cache.keys.lookup("no-such-table"))


async def test_stale_entry_is_served_while_another_request_refreshes(
    prefix: str, database_url: str, redis_client: redis.Redis
) -> None:
    settings = api_settings_for(prefix, database_url, cache_member_ttl=1, cache_stale_ratio=30)
    async with serve(settings) as api:
        path = "/api/v1/members/11"
        first = await api.client.get(path)
        assert first.headers["x-cache"] == "MISS"
        await anyio.sleep(1.1)

        # Another request holds the lease (it is refreshing): this one gets the stale value.
        lease = api.cache.keys.lease(api.cache.keys.member(11))
        redis_client.set(lease, "someone-else", px=5000)
        stale = await api.client.get(path)
        assert stale.headers["x-cache"] == "STALE"
        assert stale.content == first.content
        assert stale.headers["cache-control"] == ("private, max-age=0, stale-while-revalidate=30")

        redis_client.delete(lease)  # the refresher died: the next request refreshes
        refreshed = await api.client.get(path)
        assert refreshed.headers["x-cache"] == "MISS"
        assert (await api.client.get(path)).headers["x-cache"] == "HIT"


# --- Vary, on an app of its own: the API's routes vary on nothing -----------------------------
@pytest.fixture
async def vary_client(acache: AsyncCacheService) -> AsyncIterator[httpx.AsyncClient]:
    router = APIRouter()
    greetings = Kind("greeting", DataType.LOOKUP, Storage.RESPONSE, "a response per language")

    @router.get("/greeting")
    @cached(greetings, vary=("Accept-Language",))
    async def greeting(request: Request) -> Response:
        language = request.headers.get("accept-language", "en")
        return Response(f'{{"hello":"{language}"}}', media_type="application/json")

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(CacheMiddleware, cache=lambda: acache, routes=router.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vary") as client:
        yield client


async def test_vary_header_values_are_separate_entries(vary_client: httpx.AsyncClient) -> None:
    english = await vary_client.get("/greeting", headers={"accept-language": "en"})
    french = await vary_client.get("/greeting", headers={"accept-language": "fr"})
    assert english.headers["x-cache"] == french.headers["x-cache"] == "MISS"
    assert english.json() == {"hello": "en"} and french.json() == {"hello": "fr"}
    assert english.headers["vary"] == "accept-language"
    assert english.headers["etag"] != french.headers["etag"]

    again = await vary_client.get("/greeting", headers={"accept-language": "fr"})
    assert (again.headers["x-cache"], again.json()) == ("HIT", {"hello": "fr"})


def _keys(api: Api, glob: str) -> list[str]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    try:
        pattern = api.cache.keys.pattern(glob)
        return [key.decode() for key in client.scan_iter(match=pattern, count=1000)]
    finally:
        client.close()


def _http_keys(api: Api) -> list[str]:
    return _keys(api, "http:*")


async def test_concurrent_misses_run_the_route_once(api: Api) -> None:
    path = "/api/v1/statistics/demographics"
    answers = []

    async def get() -> None:
        answers.append(await api.client.get(path))

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(get)
    outcomes = sorted(answer.headers["x-cache"] for answer in answers)
    assert outcomes == ["HIT"] * 19 + ["MISS"]
    assert len({answer.content for answer in answers}) == 1
    one_load = len(api.statements)
    await api.cache.delete(*_keys(api, "statistics:demographics:*"))
    await api.client.get(path)
    assert len(api.statements) == 2 * one_load  # the 20 requests cost one load


async def test_a_record_read_while_redis_is_down_is_not_kept_by_clients(
    prefix: str, database_url: str
) -> None:
    """Not in the cache, so not in a browser either: no max-age for what Redis did not take."""
    settings = api_settings_for(prefix, database_url, redis_port=free_port())  # nobody there
    async with serve(settings) as api:
        for path in ("/api/v1/members/12", "/api/v1/lookups/tiers"):
            answer = await api.client.get(path)
            assert (answer.status_code, answer.headers["x-cache"]) == (200, "MISS"), path
            assert answer.headers["cache-control"] == "no-cache", path
            again = await api.client.get(path, headers={"if-none-match": answer.headers["etag"]})
            assert again.status_code == 304, path


async def test_the_near_tier_serves_the_stored_body_and_names_its_tier(api: Api) -> None:
    path = "/api/v1/members/9"
    first = await api.client.get(path)
    assert first.headers["x-cache"] == "MISS" and "x-cache-tier" not in first.headers
    tiers = []
    for _ in range(6):
        hit = await api.client.get(path)
        assert (hit.headers["x-cache"], hit.content) == ("HIT", first.content)
        assert hit.headers["etag"] == first.headers["etag"]
        tiers.append(hit.headers["x-cache-tier"])
        await anyio.sleep(0.005)
    assert tiers[0] == "redis" or tiers[0] == "near"
    assert tiers[-1] == "near", tiers
    near = api.cache.core.near
    assert near is not None and near.counters.hits >= 1
    # Another client removes the entry: the push drops it here, the route runs again.
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    try:
        client.delete(api.cache.keys.member(9))
    finally:
        client.close()
    answers = []
    for _ in range(100):
        answer = await api.client.get(path)
        answers.append(answer.headers["x-cache"])
        if answer.headers["x-cache"] == "MISS":
            break
        await anyio.sleep(0.002)
    assert answers[-1] == "MISS" and len(answers) < 50, answers


async def test_an_aggregate_near_hit_makes_no_round_trip_and_follows_a_bump_elsewhere(
    prefix: str, database_url: str
) -> None:
    """Its generations are held beside its entry: a near hit of an aggregate reads nothing
    from Redis; another process's member change (a bump) moves it to the new generation."""
    with start_redis() as server:
        settings = api_settings_for(prefix, database_url, redis_port=server.port, redis_db=0)
        async with serve(settings) as api:
            path = "/api/v1/analytics/dashboard"
            first = await api.client.get(path)
            assert first.headers["x-cache"] == "MISS"
            for _ in range(200):  # until the tier holds the entry and its generations
                hit = await api.client.get(path)
                if hit.headers.get("x-cache-tier") == "near":
                    break
                await anyio.sleep(0.005)
            assert hit.headers["x-cache-tier"] == "near"
            served = server.info("stats")["total_commands_processed"]
            for _ in range(50):
                hit = await api.client.get(path)
                assert (hit.headers["x-cache"], hit.headers["x-cache-tier"]) == ("HIT", "near")
            # Only this INFO (and perhaps a tracking heartbeat) since: no command per request.
            assert server.info("stats")["total_commands_processed"] - served <= 4

            other = build_cache(settings)  # another process, no near tier of its own
            try:
                assert bump_sync(other, MEMBER_TAGS)
            finally:
                other.close()
            # The bump is seen at once: never a HIT of the old generation again. Within the
            # dashboard's lag its last value is served as STALE; a reader asking for the
            # current value (no-cache) recomputes it, and the others then hit it.
            lagging = await api.client.get(path)
            assert lagging.headers["x-cache"] == "STALE" and "age" in lagging.headers
            current = await api.client.get(path, headers={"cache-control": "no-cache"})
            assert current.headers["x-cache"] == "MISS"
            assert (await api.client.get(path)).headers["x-cache"] == "HIT"


# --- One recompute of a tagged entry at a time, across generations -------------------------
REPORT = Kind(
    "slow_report",
    DataType.ANALYTICS,
    Storage.RESPONSE,
    "an aggregate slower than the writes that retire it",
    tags=("slow-report",),
)


async def test_a_reader_under_a_newer_generation_shares_the_recompute_under_way(
    acache: AsyncCacheService,
) -> None:
    runs: list[int] = []
    running = [0]
    router = APIRouter()

    @router.get("/report")
    @cached(REPORT)
    async def report() -> Response:
        runs.append(len(runs) + 1)
        running[0] += 1
        try:
            assert running[0] == 1, "two recomputes of one variant ran at once"
            await anyio.sleep(0.5)
        finally:
            running[0] -= 1
        return Response(f'{{"run": {len(runs)}}}', media_type="application/json")

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(CacheMiddleware, cache=lambda: acache, routes=router.routes)
    answers: dict[str, httpx.Response] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://report") as client:

        async def get(name: str) -> None:
            answers[name] = await client.get("/report")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get, "first")
            await anyio.sleep(0.1)
            await bump(acache, REPORT.tags)  # a write retires the entry being computed
            tasks.start_soon(get, "during")
        first, during = answers["first"], answers["during"]
        assert first.headers["x-cache"] == "MISS" and first.json() == {"run": 1}
        # Served the recompute under way when it ended: it may predate the write, so STALE.
        assert during.headers["x-cache"] == "STALE" and during.json() == {"run": 1}
        assert runs == [1]
        # Nothing was stored under the newer generation: the next reader recomputes.
        after = await client.get("/report")
        assert after.headers["x-cache"] == "MISS" and after.json() == {"run": 2}
        assert (await client.get("/report")).headers["x-cache"] == "HIT"


# --- Lagging behind a change, within the kind's lag (api_stub.lagging) ----------------------
LAGGING = Kind(
    "lagging_report",
    DataType.ANALYTICS,
    Storage.RESPONSE,
    "a report that may be served up to 1 s behind a change",
    tags=("lagging-report",),
    lag=1.0,
)


async def test_a_lagging_kind_serves_its_last_value_within_the_lag_and_recomputes_behind_it(
    acache: AsyncCacheService,
) -> None:
    runs: list[float] = []
    router = APIRouter()

    @router.get("/lagging")
    @cached(LAGGING)
    async def report() -> Response:
        runs.append(time.monotonic())
        await anyio.sleep(0.2)
        return Response(f'{{"run": {len(runs)}}}', media_type="application/json")

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(CacheMiddleware, cache=lambda: acache, routes=router.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://report") as client:
        first = await client.get("/lagging")
        assert (first.headers["x-cache"], first.json()) == ("MISS", {"run": 1})
        confirmed = runs[0] - 0.01  # the read began before the route ran

        await bump(acache, LAGGING.tags)  # a change retires it
        soon = await client.get("/lagging")
        # Within half the lag: the last value, marked and never fresh for clients; no
        # recompute yet (a stream of writes costs one recompute per half lag, not per write).
        assert (soon.headers["x-cache"], soon.json()) == ("STALE", {"run": 1})
        assert soon.headers["age"] == "0"
        assert "max-age=0," in soon.headers["cache-control"]
        assert len(runs) == 1

        await anyio.sleep(max(0.0, confirmed + 0.55 - time.monotonic()))
        began = time.monotonic()
        later = await client.get("/lagging")
        # Past half the lag: still answered at once, and one recompute runs behind it.
        assert time.monotonic() - began < 0.15, "the reader waited for the recompute"
        assert (later.headers["x-cache"], later.json()) == ("STALE", {"run": 1})
        during = await client.get("/lagging")
        assert (during.headers["x-cache"], during.json()) == ("STALE", {"run": 1})
        await anyio.sleep(0.35)
        assert len(runs) == 2, "one recompute behind the lagging readers"
        done = await client.get("/lagging")
        assert (done.headers["x-cache"], done.json()) == ("HIT", {"run": 2})

        # Past the lag, nothing older is served: the reader waits for the current value.
        await bump(acache, LAGGING.tags)
        await anyio.sleep(1.1)
        late = await client.get("/lagging")
        assert (late.headers["x-cache"], late.json()) == ("MISS", {"run": 3})

        # A reader that asks for the current value never lags.
        await bump(acache, LAGGING.tags)
        asked = await client.get("/lagging", headers={"cache-control": "no-cache"})
        assert (asked.headers["x-cache"], asked.json()) == ("MISS", {"run": 4})
        assert len(runs) == 4


async def test_with_redis_away_a_lagging_kind_is_served_within_its_lag_then_from_the_database(
    prefix: str, database_url: str
) -> None:
    """Redis away: the last dashboard is served for the kind's lag (capped at 1 s here)
    without the database, marked STALE and no-cache; past the lag the route runs."""
    with start_redis() as server:
        settings = api_settings_for(
            prefix, database_url, redis_port=server.port, redis_db=0, cache_max_lag_seconds=1.0
        )
        async with serve(settings) as api:
            path = "/api/v1/analytics/dashboard"
            first = await api.client.get(path)
            assert first.headers["x-cache"] == "MISS"
            server.kill()
            queried = len(api.statements)
            away = await api.client.get(path)
            assert (away.headers["x-cache"], away.json()) == ("STALE", first.json())
            assert away.headers["cache-control"] == "no-cache"
            assert len(api.statements) == queried, "the lagging answer read the database"
            await anyio.sleep(1.1)
            past = await api.client.get(path)
            assert (past.status_code, past.headers["x-cache"]) == (200, "MISS")
            assert len(api.statements) > queried


async def test_a_new_process_is_served_an_earlier_value_within_the_lag(
    prefix: str, database_url: str
) -> None:
    """After a restart, the first reader of a report a change retired is served the value of
    an earlier generation (STALE, within the lag) instead of waiting for the recompute; a
    reader asking for now gets the recompute; past the lag the earlier value is not served."""
    settings = api_settings_for(prefix, database_url, cache_max_lag_seconds=2.0)
    path = "/api/v1/analytics/dashboard"
    async with serve(settings) as first:
        before = await first.client.get(path)
        assert before.headers["x-cache"] == "MISS"
        await bump(first.cache, MEMBER_TAGS)  # a member write retires it
    async with serve(settings) as second:
        answer = await second.client.get(path)
        assert (answer.headers["x-cache"], answer.json()) == ("STALE", before.json())
        assert "max-age=0" in answer.headers["cache-control"] and "age" in answer.headers
        current = await second.client.get(path, headers={"cache-control": "no-cache"})
        assert current.headers["x-cache"] in ("MISS", "HIT")  # HIT: the recompute behind won
        assert current.json()["generated_at"] != before.json()["generated_at"]
        await bump(second.cache, MEMBER_TAGS)
    await anyio.sleep(2.1)  # past the (capped) lag: no earlier value is recent enough
    async with serve(settings) as third:
        late = await third.client.get(path)
        assert late.headers["x-cache"] == "MISS"


async def test_a_new_process_looks_back_only_when_the_current_entry_is_missing(
    prefix: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lagging kind's first reader in a process is served a current entry as a plain hit,
    looking over no earlier generations; it looks back once the entry is missing."""
    # A lag no loaded machine outlasts between the first process and the third.
    settings = api_settings_for(prefix, database_url, cache_max_lag_seconds=120.0)
    path = "/api/v1/analytics/dashboard"
    looked: list[int] = []

    def count_lookbacks(cache: AsyncCacheService) -> None:
        entries = cache.entries

        async def counted(keys: Any) -> Any:
            looked.append(len(keys))
            return await entries(keys)

        monkeypatch.setattr(cache, "entries", counted)

    async with serve(settings) as first:
        assert (await first.client.get(path)).headers["x-cache"] == "MISS"
    async with serve(settings) as second:
        count_lookbacks(second.cache)
        hit = await second.client.get(path)
        assert (hit.headers["x-cache"], looked) == ("HIT", [])
        await bump(second.cache, MEMBER_TAGS)
    async with serve(settings) as third:
        count_lookbacks(third.cache)
        answer = await third.client.get(path)
        assert answer.headers["x-cache"] == "STALE" and len(looked) == 1
