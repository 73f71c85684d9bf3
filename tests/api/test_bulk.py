"""Bulk updates and deletes through the API: every affected member record and every aggregate
goes, in O(1) Redis round trips whatever the number of members; no read returns the old row.

On a database of 100,000 members and a redis-server of this module's own, so the server's
command statistics count exactly what the invalidation sent.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text

from cache import build_cache
from config import Settings
from db.engine import make_engine
from tasks.sources import SqlSource
from tasks.warming import warm_all_members, warm_critical
from tests.api.conftest import CURRENT, Api, api_settings_for, serve
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import RedisProcess, start_redis

MEMBERS = 100_000
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def bulk_database() -> Iterator[str]:
    with throwaway_database("bulk", members=MEMBERS) as url:
        engine = make_engine(url)
        with engine.begin() as connection:  # the arrangement: every member active
            connection.execute(text("UPDATE members SET status = 'active'"))
        engine.dispose()
        yield url


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisProcess]:
    with start_redis() as proc:
        yield proc


@pytest.fixture
async def bulk_api(
    prefix: str, bulk_database: str, own_redis: RedisProcess
) -> AsyncIterator[tuple[Api, Settings]]:
    settings = api_settings_for(prefix, bulk_database, redis_port=own_redis.port, redis_db=0)
    async with serve(settings) as api:
        yield api, settings


def commands(proc: RedisProcess) -> dict[str, int]:
    stats = proc.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


async def test_a_bulk_update_of_every_member_leaves_no_old_row_in_o1_round_trips(
    bulk_api: tuple[Api, Settings], own_redis: RedisProcess
) -> None:
    api, settings = bulk_api
    # Everything cached as the platform caches it: the warm-up's members and aggregates.
    warmer, engine = build_cache(settings), make_engine(settings.database_url)
    try:
        assert warm_all_members(warmer, SqlSource(engine)).written == MEMBERS
        warm_critical(warmer, SqlSource(engine), hottest=0)
    finally:
        warmer.close()
        engine.dispose()
    sample = random.Random(7).sample(range(1, MEMBERS + 1), 300)
    for member_id in sample[:20]:
        answer = await api.client.get(f"/api/v1/members/{member_id}")
        assert (answer.headers["x-cache"], answer.json()["status"]) == ("HIT", "active")
    board = await api.client.get("/api/v1/analytics/dashboard")
    assert board.json()["members"]["by_status"]["active"] == MEMBERS

    before = commands(own_redis)
    answer = await api.client.patch(
        "/api/v1/members", params={"status": "active"}, json={"status": "lapsed"}
    )
    assert answer.status_code == 200 and answer.json() == {"updated": MEMBERS}
    sent = {name: calls - before.get(name, 0) for name, calls in commands(own_redis).items()}
    # (the test's own statistics reads and the near tier's tracking heartbeat aside)
    aside = ("info", "hello", "ping")
    sent = {name: calls for name, calls in sent.items() if calls and name not in aside}
    # One pipeline: SET NX + INCR per tag, one UNLINK of every record and its lease. On a
    # loaded host its reply may come past the socket timeout: the client then sends the
    # (idempotent) pipeline once more, still a constant number of round trips.
    runs = sent.pop("unlink", 0)
    assert runs in (1, 2), sent
    incr = sent.pop("incr", 0) + sent.pop("incrby", 0)  # redis-py may send INCR as INCRBY
    assert incr == 3 * runs, sent
    # Whatever else ran meanwhile (the API publishing its counters every few seconds) is a
    # handful of commands, not one per member.
    assert sum(sent.values()) < 20, sent

    for member_id in sample:  # loaded afresh: never the old row
        answer = await api.client.get(f"/api/v1/members/{member_id}")
        assert answer.json()["status"] == "lapsed", member_id
    assert (await api.client.get(f"/api/v1/members/{sample[0]}")).headers["x-cache"] == "HIT"
    # The current dashboard, asked for (within its lag a reader may get the one before).
    board = await api.client.get("/api/v1/analytics/dashboard", headers=CURRENT)
    assert board.headers["x-cache"] == "MISS"
    assert board.json()["members"]["by_status"]["lapsed"] == MEMBERS


async def test_a_bulk_delete_drops_the_records(bulk_api: tuple[Api, Settings]) -> None:
    api, _settings = bulk_api
    listed = await api.client.get("/api/v1/members", params={"tier": "platinum", "page_size": 5})
    doomed = [member["id"] for member in listed.json()["items"]]
    assert doomed
    for member_id in doomed:
        assert (await api.client.get(f"/api/v1/members/{member_id}")).status_code == 200
    answer = await api.client.delete("/api/v1/members", params={"tier": "platinum"})
    assert answer.status_code == 200 and answer.json()["deleted"] >= len(doomed)
    for member_id in doomed:
        assert (await api.client.get(f"/api/v1/members/{member_id}")).status_code == 404
    again = await api.client.get("/api/v1/members", params={"tier": "platinum"})
    assert again.json()["total"] == 0


@pytest.mark.parametrize(
    ("method", "params", "body", "status"),
    [
        ("PATCH", {}, {"status": "lapsed"}, 422),  # no selector: never every member by mistake
        ("PATCH", {"tier": "gold"}, {}, 422),  # nothing to set
        ("PATCH", {"tier": "gold"}, {"tier": "diamond"}, 422),  # unknown tier
        ("PATCH", {"tier": "gold"}, {"email": "x@example.org"}, 422),  # not bulk-writable
        ("DELETE", {}, None, 422),
        ("DELETE", {"colour": "red"}, None, 422),
    ],
)
async def test_bad_bulk_requests_change_nothing(
    bulk_api: tuple[Api, Settings],
    method: str,
    params: dict[str, str],
    body: dict[str, str] | None,
    status: int,
) -> None:
    api, _settings = bulk_api
    total = (await api.client.get("/api/v1/members", params={"page_size": 1})).json()["total"]
    answer = await api.client.request(method, "/api/v1/members", params=params, json=body)
    assert answer.status_code == status, answer.text
    after = (await api.client.get("/api/v1/members", params={"page_size": 1})).json()["total"]
    assert after == total
