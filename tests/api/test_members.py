"""Member writes through the API: read-after-write, negative caching, aggregates, bad input."""

from __future__ import annotations

import random
import secrets
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, func, select, text

from api_stub.problems import PROBLEM_JSON
from db.models import Member
from tests.api.conftest import CURRENT, Api, api_settings_for, serve

pytestmark = pytest.mark.anyio


def new_member(**fields: Any) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    return {
        "email": f"new.{tag}@example.org",
        "first_name": "Ada",
        "last_name": f"Tester{tag}",
        "country": "GB",
        "tier": "gold",
        "birth_date": "1990-04-01",
        **fields,
    }


def member_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Member)).scalar_one())


def next_member_id(engine: Engine) -> int:
    """The id the next insert gets (tests of one session run one at a time)."""
    with engine.connect() as conn:
        last, called = conn.execute(text("SELECT last_value, is_called FROM members_id_seq")).one()
    return int(last) + 1 if called else int(last)


async def test_put_then_get_returns_the_new_value_in_every_app(
    prefix: str, database_url: str
) -> None:
    settings = api_settings_for(prefix, database_url)
    async with serve(settings) as one, serve(settings) as two:
        path = "/api/v1/members/21"
        before = (await one.client.get(path)).json()
        assert (await two.client.get(path)).headers["x-cache"] == "HIT"  # shared entry

        body = {k: before[k] for k in ("email", "first_name", "last_name", "country", "tier")}
        put = await one.client.put(path, json=body | {"first_name": "Renamed"})
        assert put.status_code == 200
        assert put.json()["version"] == before["version"] + 1

        for api in (one, two):
            after = await api.client.get(path)
            assert after.headers["x-cache"] == "HIT"  # written through, not just deleted
            assert after.json() == put.json()

        patched = await two.client.patch(path, json={"last_name": "Patched"})
        assert patched.json()["version"] == before["version"] + 2
        assert (await one.client.get(path)).json()["last_name"] == "Patched"


async def test_stale_version_is_a_conflict_and_changes_nothing(api: Api) -> None:
    path = "/api/v1/members/22"
    current = (await api.client.get(path)).json()
    stale = await api.client.patch(path, json={"tier": "platinum", "version": 1_000})
    assert stale.status_code == 409
    assert (await api.client.get(path)).json() == current


async def test_unknown_id_is_negative_cached_until_created(api: Api, engine: Engine) -> None:
    member_id = next_member_id(engine)
    path = f"/api/v1/members/{member_id}"
    missing = await api.client.get(path)
    assert (missing.status_code, missing.headers["x-cache"]) == (404, "MISS")
    ran = len(api.statements)
    again = await api.client.get(path)
    assert (again.status_code, again.headers["x-cache"]) == (404, "HIT")
    assert again.json() == missing.json()
    assert missing.headers["content-type"] == again.headers["content-type"] == PROBLEM_JSON
    assert missing.json() | {"detail": ""} == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "",
        "instance": path,
    }
    assert len(api.statements) == ran

    created = await api.client.post("/api/v1/members", json=new_member())
    assert created.status_code == 201
    assert created.json()["id"] == member_id
    assert created.headers["location"] == path
    visible = await api.client.get(path)
    assert (visible.status_code, visible.headers["x-cache"]) == (200, "HIT")
    assert visible.json() == created.json()


async def test_delete_is_seen_at_once_and_an_old_fill_cannot_revive_it(
    api: Api, engine: Engine
) -> None:
    created = (await api.client.post("/api/v1/members", json=new_member())).json()
    path = f"/api/v1/members/{created['id']}"
    assert (await api.client.get(path)).status_code == 200
    assert (await api.client.delete(path)).status_code == 204

    gone = await api.client.get(path)
    assert (gone.status_code, gone.headers["x-cache"]) == (404, "HIT")
    assert (await api.client.delete(path)).status_code == 404
    # A fill that read the row before the delete carries its version: the guard refuses it.
    key = api.cache.keys.member(created["id"])
    assert not await api.cache.write_through(key, created, created["version"])
    assert (await api.client.get(path)).status_code == 404


async def test_member_writes_invalidate_lists_and_aggregates(api: Api) -> None:
    paths = [
        "/api/v1/analytics/dashboard",
        "/api/v1/statistics/demographics",
        "/api/v1/members?country=NZ&page_size=500",
    ]
    before = {path: (await api.client.get(path)).json() for path in paths}
    for path in paths:
        assert (await api.client.get(path)).headers["x-cache"] == "HIT"

    created = await api.client.post("/api/v1/members", json=new_member(country="NZ"))
    after = {}
    for path in paths:
        # Within the kind's lag (cache.kinds) a reader may be served the value from before
        # the write, marked STALE; a reader asking for the current value recomputes it.
        lagging = await api.client.get(path)
        assert lagging.headers["x-cache"] == "STALE" and lagging.json() == before[path], path
        answer = await api.client.get(path, headers=CURRENT)
        assert answer.headers["x-cache"] == "MISS", path
        after[path] = answer.json()
        assert (await api.client.get(path)).json() == after[path]  # the others hit it
    assert after[paths[0]]["members"]["total"] == before[paths[0]]["members"]["total"] + 1
    assert after[paths[1]]["total"] == before[paths[1]]["total"] + 1
    listed = after[paths[2]]
    assert listed["total"] == before[paths[2]]["total"] + 1
    assert created.json() in listed["items"]

    # Lookups do not derive from members: untouched.
    await api.client.get("/api/v1/lookups/tiers")
    await api.client.delete(f"/api/v1/members/{created.json()['id']}")
    assert (await api.client.get("/api/v1/lookups/tiers")).headers["x-cache"] == "HIT"
    total = (await api.client.get(paths[0], headers=CURRENT)).json()["members"]["total"]
    assert total == before[paths[0]]["members"]["total"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (new_member(email="not-an-email"), {"email"}),
        (new_member(first_name="", country="GBR"), {"first_name", "country"}),
        (new_member(birth_date="2999-01-01"), {"birth_date"}),
        (new_member(version=3), {"version"}),  # not writable on create
        ({"email": "only@example.org"}, {"first_name", "last_name", "country"}),
    ],
)
async def test_bad_create_is_422_naming_the_fields_and_writes_nothing(
    api: Api, engine: Engine, body: dict[str, Any], fields: set[str]
) -> None:
    count = member_count(engine)
    answer = await api.client.post("/api/v1/members", json=body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM_JSON
    problem = answer.json()
    assert (problem["status"], problem["instance"]) == (422, "/api/v1/members")
    assert {error["loc"][-1] for error in problem["errors"]} == fields
    assert member_count(engine) == count


@pytest.mark.parametrize("field", ["status", "tier", "country"])
async def test_unknown_lookup_code_is_422_naming_the_field(
    api: Api, engine: Engine, field: str
) -> None:
    count = member_count(engine)
    value = "ZZ" if field == "country" else "bogus"
    answer = await api.client.post("/api/v1/members", json=new_member(**{field: value}))
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", field]
    assert answer.json()["detail"] == f"body.{field}: unknown {field}"
    assert member_count(engine) == count

    path = "/api/v1/members/23"
    before = await api.client.get(path)
    bad = await api.client.patch(path, json={field: value})
    assert bad.status_code == 422
    after = await api.client.get(path)
    assert after.headers["x-cache"] == "HIT" and after.content == before.content


def _counted(statements: list[str]) -> int:
    return sum("count(*)" in statement.lower() for statement in statements)


async def test_a_list_page_is_read_now_and_its_total_lags_by_the_count_kinds_lag(
    api: Api,
) -> None:
    api.statements.clear()
    first = await api.client.get("/api/v1/members?tier=gold&page_size=5")
    assert first.headers["x-cache"] == "MISS" and _counted(api.statements) == 1
    created = (await api.client.post("/api/v1/members", json=new_member(tier="gold"))).json()

    # Other pages of the same filters, never read: their rows are read now, and no count
    # runs for them. A full page keeps the total counted before the write (within
    # member_count's lag); the last page's rows give the exact total.
    api.statements.clear()
    assert first.json()["total"] >= 10  # page 2 is full
    middle = await api.client.get("/api/v1/members?tier=gold&page_size=5&page=2")
    assert middle.headers["x-cache"] == "MISS"
    assert middle.json()["total"] == first.json()["total"]
    last_page = first.json()["total"] // 5 + 1
    later = await api.client.get(f"/api/v1/members?tier=gold&page_size=5&page={last_page}")
    assert later.headers["x-cache"] == "MISS"
    assert created in later.json()["items"]  # the page itself is not behind
    assert later.json()["total"] == first.json()["total"] + 1
    assert api.statements and _counted(api.statements) == 0

    # A reader who asks for now (a reload) gets the current total, counted again.
    current = await api.client.get(
        f"/api/v1/members?tier=gold&page_size=5&page={last_page + 1}", headers=CURRENT
    )
    assert current.json()["total"] == first.json()["total"] + 1
    assert _counted(api.statements) == 1


async def test_taken_email_is_a_conflict(api: Api, engine: Engine) -> None:
    taken = (await api.client.get("/api/v1/members/24")).json()["email"]
    count = member_count(engine)
    answer = await api.client.post("/api/v1/members", json=new_member(email=taken.upper()))
    assert answer.status_code == 409
    assert member_count(engine) == count


async def test_writes_to_unknown_ids_are_404(api: Api) -> None:
    path = "/api/v1/members/987654321"
    assert (await api.client.put(path, json=new_member())).status_code == 404
    assert (await api.client.patch(path, json={"tier": "gold"})).status_code == 404
    assert (await api.client.delete(path)).status_code == 404


async def test_no_read_started_after_an_acknowledged_write_is_stale(
    prefix: str, database_url: str
) -> None:
    """Random writers and readers over two apps (two caches, one Redis): a GET that starts
    after a write was acknowledged never returns an older version."""
    rng = random.Random(3)
    ids = [61, 62, 63]
    settings = api_settings_for(prefix, database_url)
    async with serve(settings) as one, serve(settings) as two:
        apps = [one, two]
        acked = {i: (await one.client.get(f"/api/v1/members/{i}")).json()["version"] for i in ids}
        stale: list[tuple[int, int, int]] = []

        async def writer(name: str) -> None:
            for step in range(12):
                member_id, app = rng.choice(ids), rng.choice(apps)
                answer = await app.client.patch(
                    f"/api/v1/members/{member_id}", json={"first_name": f"{name}{step}"}
                )
                acked[member_id] = max(acked[member_id], answer.json()["version"])

        async def reader() -> None:
            for _ in range(40):
                member_id, app = rng.choice(ids), rng.choice(apps)
                floor = acked[member_id]
                seen = (await app.client.get(f"/api/v1/members/{member_id}")).json()["version"]
                if seen < floor:
                    stale.append((member_id, seen, floor))

        async with anyio.create_task_group() as tasks:
            for name in ("a", "b"):
                tasks.start_soon(writer, name)
            for _ in range(4):
                tasks.start_soon(reader)
        assert stale == []
        for member_id in ids:
            for app in apps:
                final = (await app.client.get(f"/api/v1/members/{member_id}")).json()
                assert final["version"] == acked[member_id]
