"""With a real Celery worker (tests/workers/harness.py): health is 200 once worker and beat are
alive, and a warm-up enqueued over HTTP runs to SUCCESS, its progress readable over HTTP."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from api_stub.management import PREFIX
from tests.management.conftest import TEST_CONFIG, Tokens, serve
from tests.workers import harness

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def stack() -> Iterator[harness.Stack]:
    shared = harness.acquire()
    try:
        yield shared
    finally:
        harness.release()


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
