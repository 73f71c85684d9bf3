"""Member activity through the API: accepted in Redis, flushed to PostgreSQL exactly once."""

from __future__ import annotations

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
