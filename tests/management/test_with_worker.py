"""With a real Celery worker (tests/workers/harness.py): health is 200 once worker and beat are
alive, and a warm-up enqueued over HTTP runs to SUCCESS, its progress readable over HTTP."""

from __future__ import annotations

import dataclasses
import time

import pytest

from api_stub.management import PREFIX
from tests.api.test_members import new_member
from tests.api.test_warmed import warmed_routes
from tests.management.conftest import TEST_CONFIG, Tokens, serve
from tests.workers import harness

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_health_and_warmup_with_a_live_worker(stack: harness.Stack, tokens: Tokens) -> None:
    config = dataclasses.replace(TEST_CONFIG, ping_timeout_s=1.5, check_timeout_s=4.0)
    async with serve(stack.settings, tokens, config) as mgmt:
        first = (await mgmt.call("GET", f"{PREFIX}/health", "viewer")).json()
        assert first["checks"]["workers"]["ok"], first["checks"]["workers"]
        # Beat is not part of this stack: its leader lease is what the check reads.
        lease = mgmt.runtime.cache.keys.system("beat", "leader")
        await mgmt.runtime.cache.clients.writer.set(lease, b"test-beat", px=10_000)
        try:
            answer = await mgmt.call("GET", f"{PREFIX}/health", "viewer")
            assert answer.status_code == 200, answer.json()["failing"]
        finally:
            await mgmt.runtime.cache.clients.writer.delete(lease)

        queued = await mgmt.call(
            "POST", f"{PREFIX}/warmup", "operator", json={"kind": "members", "ids": [1, 2, 3]}
        )
        assert queued.status_code == 202
        status_url = queued.json()["status_url"]
        deadline = time.monotonic() + 30
        while True:
            state = (await mgmt.call("GET", status_url, "viewer")).json()
            if state["ready"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert state["state"] == "SUCCESS", state
        assert state["result"]["written"] == 3


async def test_warm_up_through_the_worker_then_every_aggregate_route_hits(
    stack: harness.Stack, tokens: Tokens
) -> None:
    """After a member change: ``warmup critical`` (as cachectl enqueues it, over HTTP, run by
    a real worker), then the first GET of every aggregate and lookup route is a HIT."""
    async with serve(stack.settings, tokens) as mgmt:
        created = await mgmt.call("POST", "/api/v1/members", None, json=new_member())
        assert created.status_code == 201, created.text
        queued = await mgmt.call("POST", f"{PREFIX}/warmup", "operator", json={"kind": "critical"})
        assert queued.status_code == 202
        done = harness.final(mgmt.runtime.tasks, queued.json()["task_id"])
        assert done.state == "SUCCESS", done.error
        for path, _kind, _params in warmed_routes():
            answer = await mgmt.call("GET", path, None)
            assert (answer.status_code, answer.headers["x-cache"]) == (200, "HIT"), path
