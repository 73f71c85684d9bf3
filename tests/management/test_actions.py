"""Warm-up, invalidation and dead-letter replay: 202s, what reaches Redis and the broker, the
validation of bodies, and the audit trail (no record, no action)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis

from api_stub.management import PREFIX
from api_stub.management.schemas import MAX_IDS, Tag
from cache.kinds import KINDS
from cache.writebehind import ActivityEvent
from config import Settings
from tests.conftest import TEST_REDIS_DB
from tests.management.conftest import Mgmt, Tokens, serve, settings_for
from tests.support.redis_procs import RedisProcess

pytestmark = pytest.mark.anyio


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    yield client
    client.close()


@pytest.fixture
def queues(broker: RedisProcess) -> Iterator[redis.Redis]:
    client = broker.client(db=1)
    yield client
    client.close()


async def test_tags_of_the_schema_are_the_member_tags() -> None:
    assert Tag.__args__ == KINDS.tags


async def test_warmup_is_enqueued_and_its_state_readable(mgmt: Mgmt, queues: redis.Redis) -> None:
    before = queues.llen("cache.warmup")
    answer = await mgmt.call(
        "POST", f"{PREFIX}/warmup", "operator", json={"kind": "members", "ids": [1, 2, 3]}
    )
    assert answer.status_code == 202
    task_id = answer.json()["task_id"]
    assert answer.json()["status_url"] == f"{PREFIX}/warmup/{task_id}"
    assert queues.llen("cache.warmup") == before + 1
    state = (await mgmt.call("GET", f"{PREFIX}/warmup/{task_id}", "viewer")).json()
    assert state["state"] == "PENDING" and not state["ready"]  # no worker in these tests
    entry = (await mgmt.call("GET", f"{PREFIX}/audit")).json()["entries"][0]
    assert entry["action"] == "cache.warmup" and entry["who"] == "operator-test"
    assert entry["arguments"] == {"kind": "members", "ids": [1, 2, 3]}
    assert entry["result"] == {"task_id": task_id} and entry["status"] == 202


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "members"},
        {"kind": "critical", "ids": [1]},
        {"kind": "members", "ids": []},
        {"kind": "members", "ids": [0]},
        {"kind": "members", "ids": [2**63]},
        {"kind": "members", "ids": list(range(1, MAX_IDS + 2))},
        {"kind": "everything"},
        {"kind": "all", "extra": 1},
        [],
    ],
)
async def test_bad_warmups_are_refused_before_anything_is_sent(
    mgmt: Mgmt, queues: redis.Redis, body: object
) -> None:
    before = queues.llen("cache.warmup")
    answer = await mgmt.call("POST", f"{PREFIX}/warmup", "operator", json=body)
    assert answer.status_code == 422
    assert queues.llen("cache.warmup") == before


async def test_an_oversized_body_is_413(mgmt: Mgmt) -> None:
    body = b'{"kind": "members", "ids": [' + b"1," * 200_000 + b"1]}"
    answer = await mgmt.call(
        "POST", f"{PREFIX}/warmup", "operator", content=body,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 413


async def test_invalidation_by_tags_bumps_generations(mgmt: Mgmt, shared: redis.Redis) -> None:
    keys = mgmt.runtime.cache.keys
    shared.set(keys.generation("analytics"), 100)
    shared.set(keys.generation("members"), 200)
    answer = await mgmt.call(
        "POST", f"{PREFIX}/invalidation/trigger", "operator", json={"tags": ["analytics"]}
    )
    assert answer.status_code == 202 and answer.json()["applied"] is True
    assert int(shared.get(keys.generation("analytics")) or 0) == 101
    assert int(shared.get(keys.generation("members")) or 0) == 200


async def test_invalidation_of_members_drops_them_and_enqueues_the_aggregates(
    mgmt: Mgmt, shared: redis.Redis, queues: redis.Redis
) -> None:
    keys = mgmt.runtime.cache.keys
    shared.mset({keys.member(i): b"cached" for i in (1, 2, 3)})
    before = queues.llen("cache.invalidate")
    answer = await mgmt.call(
        "POST", f"{PREFIX}/invalidation/trigger", "operator", json={"member_ids": [1, 2]}
    )
    assert answer.status_code == 202 and len(answer.json()["task_ids"]) == 1
    assert not shared.exists(keys.member(1)) and not shared.exists(keys.member(2))
    assert shared.exists(keys.member(3))
    assert queues.llen("cache.invalidate") == before + 1


async def test_invalidation_of_a_data_type_and_of_a_bulk_event(
    mgmt: Mgmt, shared: redis.Redis, queues: redis.Redis
) -> None:
    keys = mgmt.runtime.cache.keys
    shared.mset({keys.lookup(name): b"l" for name in ("tiers", "statuses")})
    shared.set(keys.member(9), b"m")
    answer = await mgmt.call(
        "POST", f"{PREFIX}/invalidation/trigger", "operator", json={"data_type": "lookup"}
    )
    assert answer.status_code == 202 and answer.json()["cleared"]["deleted"] == 2
    assert shared.exists(keys.member(9))
    before = queues.llen("cache.invalidate")
    bulk = {"bulk": {"kind": "import", "affected_count": 5000}}
    answer = await mgmt.call("POST", f"{PREFIX}/invalidation/trigger", "operator", json=bulk)
    assert answer.status_code == 202
    assert queues.llen("cache.invalidate") == before + 1
    # With the members' ids: the same one message, which carries them to the worker.
    bulk = {"bulk": {"kind": "update", "affected_count": 3, "member_ids": [4, 5, 6]}}
    answer = await mgmt.call("POST", f"{PREFIX}/invalidation/trigger", "operator", json=bulk)
    assert answer.status_code == 202 and len(answer.json()["task_ids"]) == 1
    message = json.loads(queues.lindex("cache.invalidate", 0) or b"{}")
    assert message["headers"]["task"] == "tasks.invalidation.on_bulk_operation"
    assert json.loads(base64.b64decode(message["body"]))[0] == ["update", 3, [4, 5, 6]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tags": ["analytics"], "data_type": "member"},
        {"tags": ["everything"]},
        {"tags": []},
        {"data_type": "sys"},
        {"bulk": {"kind": "import", "affected_count": -1}},
        {"bulk": {"kind": "update", "affected_count": 0, "member_ids": [1]}},
        {"bulk": {"kind": "update", "affected_count": 2, "member_ids": [0, 1]}},
        {"bulk": {"kind": "update", "affected_count": 2, "member_ids": []}},
        {"member_ids": ["1; DROP TABLE members"]},
    ],
)
async def test_bad_invalidations_are_422(mgmt: Mgmt, body: object) -> None:
    answer = await mgmt.call("POST", f"{PREFIX}/invalidation/trigger", "operator", json=body)
    assert answer.status_code == 422


async def test_dead_letters_are_listed_and_replayed(mgmt: Mgmt) -> None:
    wb = mgmt.runtime.writebehind
    wb.ensure_group()
    wb.record([ActivityEvent(7, "login"), ActivityEvent(8, "checkin")])
    batch = wb.read_batch("test-consumer", 10)
    wb.dead_letter([event.id for event in batch.events], "row can never be written")
    listed = (await mgmt.call("GET", f"{PREFIX}/dead-letters", "viewer")).json()
    assert listed["count"] == 2
    assert {letter["m"] for letter in listed["dead_letters"]} == {"7", "8"}
    first = listed["dead_letters"][0]["dead_id"]
    page = await mgmt.call("GET", f"{PREFIX}/dead-letters", "viewer", params={"after": first})
    assert [letter["m"] for letter in page.json()["dead_letters"]] == ["8"]

    backlog = wb.health().backlog
    replay = await mgmt.call(
        "POST", f"{PREFIX}/dead-letters/replay", "operator", json={"ids": [first]}
    )
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    assert wb.health().backlog == backlog + 1
    assert wb.health().dead_letters == 1
    bad = await mgmt.call(
        "POST", f"{PREFIX}/dead-letters/replay", "operator", json={"ids": ["0-0 OR 1"]}
    )
    assert bad.status_code == 422


async def test_without_the_audit_trail_no_action_runs(
    prefix: str, broker: RedisProcess, tokens: Tokens, shared: redis.Redis
) -> None:
    dead_db = "postgresql+psycopg://root@127.0.0.1:1/nowhere"
    settings: Settings = settings_for(prefix, dead_db, broker.port)
    async with serve(settings, tokens) as mgmt:
        key = mgmt.runtime.cache.keys.member(1)
        shared.set(key, b"still here")
        answer = await mgmt.call("DELETE", f"{PREFIX}/clear", params={"pattern": "member:*"})
        assert answer.status_code == 503
        assert "audit" in answer.json()["detail"]
        assert shared.get(key) == b"still here"
        # Reads need no audit record.
        assert (await mgmt.call("GET", f"{PREFIX}/metrics", "viewer")).status_code == 200
