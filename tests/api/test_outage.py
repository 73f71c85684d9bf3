"""Redis unavailable: every route answers from the database; invalidations wait and replay."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cache import codec
from cache.invalidation import MEMBER_TAGS
from db import queries
from tests.api.conftest import CURRENT, api_settings_for, serve
from tests.api.test_import import jsonl
from tests.api.test_members import member_count, new_member
from tests.support.redis_procs import free_port, start_redis

pytestmark = pytest.mark.anyio


def read(engine: Engine, work: Any) -> Any:
    with Session(engine) as session:
        return work(session)


async def test_every_route_answers_from_the_database_when_redis_is_down(
    prefix: str, database_url: str, engine: Engine
) -> None:
    settings = api_settings_for(prefix, database_url, redis_port=free_port())  # nobody there
    async with serve(settings) as api:
        client = api.client
        expected = {
            "/api/v1/members/31": read(engine, lambda s: queries.get_member(s, 31)),
            "/api/v1/members?tier=gold&page=2&page_size=7": read(
                engine, lambda s: queries.list_members(s, tier="gold", page=2, page_size=7)
            ),
            "/api/v1/statistics/demographics": read(engine, queries.demographics),
            "/api/v1/lookups/countries": read(engine, lambda s: queries.lookup(s, "countries")),
        }
        for path, value in expected.items():
            for _ in range(2):
                answer = await client.get(path)
                assert (answer.status_code, answer.headers["x-cache"]) == (200, "MISS"), path
                assert answer.json() == value, path
        dashboard = await client.get("/api/v1/analytics/dashboard")
        assert dashboard.status_code == 200
        assert dashboard.json()["members"]["total"] == member_count(engine)
        missing = await client.get("/api/v1/members/987654321")
        assert (missing.status_code, missing.headers["x-cache"]) == (404, "MISS")
        assert (await client.get("/api/v1/lookups/nope")).status_code == 404

        created = await client.post("/api/v1/members", json=new_member())
        assert created.status_code == 201
        path = f"/api/v1/members/{created.json()['id']}"
        assert (await client.get(path)).json() == created.json()
        replaced = await client.put(path, json=new_member())
        assert (await client.get(path)).json() == replaced.json()
        patched = await client.patch(path, json={"first_name": "Offline"})
        assert (await client.get(path)).json() == patched.json()
        imported = await client.post("/api/v1/members/import", content=jsonl([new_member()]))
        assert imported.json()["imported"] == 1
        assert (await client.delete(path)).status_code == 204
        assert (await client.get(path)).status_code == 404
        assert (await client.post("/api/v1/members", json={"email": "x"})).status_code == 422

        # Nothing was dropped: the member and the generations wait for Redis.
        pending = set(api.cache.core.outbox.drain())
        keys = api.cache.keys
        assert keys.member(created.json()["id"]) in pending
        assert {keys.generation(tag) for tag in MEMBER_TAGS} <= pending


@pytest.mark.fault
async def test_invalidations_missed_during_an_outage_are_replayed(
    prefix: str, database_url: str, engine: Engine
) -> None:
    """Redis restarts with its data (AOF): the entries written before the outage are back,
    and the writes made during it must still win."""
    with start_redis(appendonly=True, appendfsync="always") as proc:
        settings = api_settings_for(
            prefix, database_url, redis_port=proc.port, redis_db=0, cache_breaker_reset_seconds=0.2
        )
        async with serve(settings) as api:
            client = api.client
            member_path, dashboard_path = "/api/v1/members/41", "/api/v1/analytics/dashboard"
            old_member = (await client.get(member_path)).json()
            total = (await client.get(dashboard_path)).json()["members"]["total"]
            assert (await client.get(member_path)).headers["x-cache"] == "HIT"
            assert (await client.get(dashboard_path)).headers["x-cache"] == "HIT"

            proc.kill()
            patched = await client.patch(member_path, json={"first_name": "DuringOutage"})
            assert patched.status_code == 200
            rows = [new_member(), new_member()]
            assert (await client.post("/api/v1/members/import", content=jsonl(rows))).is_success
            assert (await client.get(member_path)).json() == patched.json()
            assert len(api.cache.core.outbox) >= 1 + len(MEMBER_TAGS)

            proc.restart()
            # The app replays its outbox by itself, before any request of its own: other
            # processes read this Redis too.
            restarted = proc.client()
            old_entry = api.cache.keys.member(41)

            def served() -> bool:  # a value, not the outbox's retirement of the key
                raw = restarted.get(old_entry)
                return raw is not None and not codec.decode(raw).retired

            assert served()  # Redis came back with the old entry
            for _ in range(50):
                if not served():
                    break
                await anyio.sleep(0.1)
            assert not served()  # retired at the patch's version: older writes stay out
            restarted.close()

            member = await client.get(member_path)
            assert member.json() == patched.json() != old_member
            dashboard = await client.get(dashboard_path, headers=CURRENT)  # not a lagging one
            assert dashboard.headers["x-cache"] == "MISS"
            assert dashboard.json()["members"]["total"] == total + len(rows)
            assert len(api.cache.core.outbox) == 0
