"""The automatic warm-up end to end: nobody types a command, the first reads are HITs.

A real ``celery worker`` process (tests/workers/harness.py) and the real API with the
management routes (tests/management/conftest.py ``serve``). The routes are the registry's
(tests/api/test_warmed.py ``warmed_routes``: every aggregate and lookup a critical warm-up
fills) plus the hottest member by the warm-up's own ranking.

- A worker started against an empty cache warms it (worker_ready -> auto_warm, only if cold).
- A management ``clear`` that removed entries sends the warm-up itself.

Each waits for the warm-up the way an operator's dashboard does (GET /warmup/current, then
the task's progress), never by reading the keys, then checks that the first GET of every
route is an ``X-Cache: HIT``, all within 30 s of the trigger.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from api_stub.management import PREFIX
from db import make_engine
from tasks.sources import SqlSource
from tests.api.test_warmed import warmed_routes
from tests.management.conftest import ROLES, Mgmt, Tokens, serve
from tests.workers import harness

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

WITHIN = 30.0  # seconds from the trigger to the first HIT


@pytest.fixture
def tokens() -> Tokens:
    return Tokens({role: secrets.token_urlsafe(32) for role in ROLES})


@pytest.fixture
def hot_member(stack: harness.Stack) -> Iterator[int]:
    """A member who paid today (the seed's payments are older than the warm-up's ranking
    window), as the critical warm-up's own query ranks it; the payment is removed after."""
    engine = make_engine(stack.database_url)
    paid = {"member": 7, "amount": Decimal("1.00"), "at": dt.datetime.now(dt.UTC)}
    try:
        with engine.begin() as conn:
            row = conn.execute(
                text(
                    "INSERT INTO payments (member_id, amount, paid_at, kind)"
                    " VALUES (:member, :amount, :at, 'event') RETURNING id"
                ),
                paid,
            ).scalar_one()
        try:
            hottest = SqlSource(engine).hottest_member_ids(1)
            assert hottest == [paid["member"]]
            yield hottest[0]
        finally:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM payments WHERE id = :id"), {"id": row})
    finally:
        engine.dispose()


def _paths(member_id: int) -> list[str]:
    return [path for path, _, _ in warmed_routes()] + [f"/api/v1/members/{member_id}"]


async def _first_reads(mgmt: Mgmt, paths: list[str]) -> dict[str, str]:
    answers = {}
    for path in paths:
        answer = await mgmt.call("GET", path, None)
        assert answer.status_code == 200, (path, answer.text)
        answers[path] = answer.headers["x-cache"]
    return answers


async def _wait(mgmt: Mgmt, ready: Any, deadline: float, what: str) -> Any:
    while True:
        value = await ready()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} within {WITHIN} s"
        time.sleep(0.1)


async def test_a_worker_started_against_an_empty_cache_warms_it(
    clean_stack: harness.Stack, tokens: Tokens, hot_member: int
) -> None:
    stack = clean_stack
    env = stack.env | {"CACHE_AUTOWARM": "true"}
    worker = harness.WorkerProcess(env, stack.directory, name=f"autowarm-{uuid.uuid4().hex[:6]}")
    async with serve(stack.settings, tokens) as mgmt:
        started_at = time.time()
        deadline = time.monotonic() + WITHIN
        worker.start()
        try:

            async def finished() -> dict[str, Any] | None:
                state = (await mgmt.call("GET", f"{PREFIX}/warmup/current", "viewer")).json()
                last = state["last"]
                return last if last and last["started_at"] >= started_at else None

            last = await _wait(mgmt, finished, deadline, "automatic warm-up")
            assert last["reason"] == "worker-start"
            assert last["result"]["warmed"] is True, last
            reads = await _first_reads(mgmt, _paths(hot_member))
            assert time.monotonic() < deadline
        finally:
            worker.stop()
    assert set(reads.values()) == {"HIT"}, reads


async def test_a_clear_through_the_management_api_is_followed_by_a_warm_up(
    clean_stack: harness.Stack, tokens: Tokens, hot_member: int
) -> None:
    stack = clean_stack
    settings = stack.settings.model_copy(update={"cache_autowarm": True})
    async with serve(settings, tokens) as mgmt:
        paths = _paths(hot_member)
        await _first_reads(mgmt, paths)  # the routes fill the cache: something to clear
        await _first_reads(mgmt, paths)  # HITs from Redis: now in this process's near tier
        deadline = time.monotonic() + WITHIN
        cleared = await mgmt.call("DELETE", f"{PREFIX}/clear", "admin", params={"pattern": "*"})
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["deleted"] >= len(paths)
        # The member this process read went first, with a warm-up of its own.
        first = cleared.json()["first"]
        assert first["members"] == 1 and first["task_id"], cleared.json()
        status_url = cleared.json()["warmup"]["status_url"]

        async def done() -> dict[str, Any] | None:
            state = (await mgmt.call("GET", status_url, "viewer")).json()
            return state if state["ready"] else None

        state = await _wait(mgmt, done, deadline, "warm-up after the clear")
        assert state["state"] == "SUCCESS", state
        assert state["result"]["reason"] == "clear" and state["result"]["warmed"] is True
        refilled = (await mgmt.call("GET", first["status_url"], "viewer")).json()
        assert refilled["state"] == "SUCCESS" and refilled["result"]["total"] == 1, refilled
        reads = await _first_reads(mgmt, paths)
        assert time.monotonic() < deadline
    assert set(reads.values()) == {"HIT"}, reads
