"""Member activity through the API: accepted in Redis, flushed to PostgreSQL exactly once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, text

from api_stub.problems import WRITEBEHIND_UNAVAILABLE
from cache.writebehind import Flusher
from config import Settings
from services import Services
from tasks.writebehind import sql_apply
from tests.api.conftest import Api, api_settings_for, serve

pytestmark = pytest.mark.anyio
PAGE_VIEWS = text(
    "SELECT coalesce(sum(page_views), 0) FROM member_activity_daily WHERE member_id = :m"
)


def _drain(settings: Settings, engine: Engine) -> None:
    """What a flush worker does, with the services a worker process opens."""
    with Services.open(settings) as services:
        flusher = Flusher(services.writebehind, sql_apply(engine), "test-flusher")
        flusher.drain(10, until_empty=True)


async def test_activity_is_readable_at_once_and_lands_once(
    api: Api, api_settings: Settings, engine: Engine
) -> None:
    with engine.connect() as conn:
        member_id = conn.execute(text("SELECT min(id) FROM members")).scalar_one()
        before = conn.execute(PAGE_VIEWS, {"m": member_id}).scalar_one()
    single = await api.client.post(f"/api/v1/members/{member_id}/activity", json={"kind": "login"})
    assert single.status_code == 202 and single.json()["accepted"] == 1
    batch = await api.client.post(
        f"/api/v1/members/{member_id}/activity",
        json={"events": [{"kind": "page_view", "times": 3}, {"kind": "page_view"}]},
    )
    assert batch.status_code == 202 and batch.json()["accepted"] == 2

    read = await api.client.get(f"/api/v1/members/{member_id}/activity")
    assert read.status_code == 200
    today = read.json()["days"][0]
    assert today["login"] >= 1 and today["page_view"] >= 4
    assert read.json()["last_seen_at"] is not None

    _drain(api_settings, engine)
    _drain(api_settings, engine)  # a second drain finds nothing to apply again
    with engine.connect() as conn:
        after = conn.execute(PAGE_VIEWS, {"m": member_id}).scalar_one()
    assert after - before == 4


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "dance"},
        {"kind": "login", "times": 0},
        {"events": []},
        {"kind": "login", "at": "2001-01-01T00:00:00+00:00"},
        {"kind": "login", "at": "yesterday"},
    ],
)
async def test_bad_activity_is_422_and_records_nothing(api: Api, body: dict[str, object]) -> None:
    answer = await api.client.post("/api/v1/members/1/activity", json=body)
    assert answer.status_code == 422, answer.text


async def test_redis_down_is_503_not_silent_loss(database_url: str, prefix: str) -> None:
    settings = api_settings_for(prefix, database_url, redis_port=1)
    async with serve(settings) as down:
        answer = await down.client.post("/api/v1/members/1/activity", json={"kind": "login"})
    assert answer.status_code == 503
    assert answer.json()["type"] == WRITEBEHIND_UNAVAILABLE.type


CHECKINS = text("SELECT coalesce(sum(checkins), 0) FROM member_activity_daily WHERE member_id = :m")


def _member(engine: Engine, offset: int) -> int:
    """A member of the shared database that only the test taking ``offset`` records for."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT id FROM members ORDER BY id DESC LIMIT 1 OFFSET :o"), {"o": offset}
        ).scalar_one()
    return int(found)


def _checkins(engine: Engine, member_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(CHECKINS, {"m": member_id}).scalar_one())


def _backlog(api: Api) -> int:
    return api.app.state.running.services.writebehind.health().backlog


async def test_unknown_member_is_404_and_records_nothing(api: Api, engine: Engine) -> None:
    with engine.connect() as conn:
        unknown = int(conn.execute(text("SELECT max(id) + 1000 FROM members")).scalar_one())
    backlog = _backlog(api)
    for body in ({"kind": "login"}, {"events": [{"kind": "checkin", "times": 2}]}):
        answer = await api.client.post(f"/api/v1/members/{unknown}/activity", json=body)
        assert answer.status_code == 404, answer.text
        assert str(unknown) in answer.json()["detail"]
    assert _backlog(api) == backlog  # no stream entry
    counters = await api.client.get(f"/api/v1/members/{unknown}/activity")
    assert counters.json()["days"] == []  # no counter
    # The absence is cached with the member record: a repeat asks the database nothing.
    api.statements.clear()
    again = await api.client.post(f"/api/v1/members/{unknown}/activity", json={"kind": "login"})
    assert again.status_code == 404 and api.statements == []


async def test_a_known_member_costs_no_query_once_cached(api: Api, engine: Engine) -> None:
    member_id = _member(engine, 5)
    first = await api.client.post(f"/api/v1/members/{member_id}/activity", json={"kind": "login"})
    assert first.status_code == 202
    api.statements.clear()
    for _ in range(3):
        answer = await api.client.post(
            f"/api/v1/members/{member_id}/activity", json={"kind": "page_view"}
        )
        assert answer.status_code == 202
    assert api.statements == []  # the cached member record answered


async def test_idempotency_key_replays_the_answer_and_refuses_another_body(
    api: Api, engine: Engine
) -> None:
    member_id = _member(engine, 6)
    url = f"/api/v1/members/{member_id}/activity"
    body = {"events": [{"kind": "checkin", "times": 2}, {"kind": "login"}]}
    key = {"Idempotency-Key": "order-7f3a/attempt"}
    backlog = _backlog(api)
    first = await api.client.post(url, json=body, headers=key)
    assert first.status_code == 202 and first.json()["accepted"] == 2
    retry = await api.client.post(url, json=body, headers=key)
    assert (retry.status_code, retry.json()) == (first.status_code, first.json())
    assert _backlog(api) == backlog + 2  # recorded once
    today = (await api.client.get(url)).json()["days"][0]
    assert today["checkin"] == 2 and today["login"] == 1

    other = await api.client.post(url, json={"kind": "checkin"}, headers=key)
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    elsewhere = await api.client.post(
        f"/api/v1/members/{_member(engine, 7)}/activity", json=body, headers=key
    )
    assert elsewhere.status_code == 422  # the same body for another member is another request
    too_long = await api.client.post(url, json=body, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert _backlog(api) == backlog + 2
    fresh = await api.client.post(url, json=body, headers={"Idempotency-Key": "order-7f3b"})
    assert fresh.status_code == 202 and fresh.json()["ids"] != first.json()["ids"]


async def test_concurrent_posts_with_one_key_count_once(api: Api, engine: Engine) -> None:
    member_id = _member(engine, 8)
    url = f"/api/v1/members/{member_id}/activity"
    key = {"Idempotency-Key": "burst-of-retries"}
    backlog = _backlog(api)
    answers = await asyncio.gather(
        *(api.client.post(url, json={"kind": "checkin"}, headers=key) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1  # one answer, replayed to the others
    assert _backlog(api) == backlog + 1
