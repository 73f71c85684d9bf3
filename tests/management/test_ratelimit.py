"""The rate limit: per token, shared through Redis, 429 with Retry-After, fail-open."""

from __future__ import annotations

import dataclasses

import pytest

from api_stub.management import PREFIX
from api_stub.management.ratelimit import RateLimiter
from api_stub.problems import PROBLEM_JSON, RATE_LIMITED
from config import Settings
from tests.management.conftest import TEST_CONFIG, Tokens, serve, settings_for
from tests.support.redis_procs import RedisProcess

pytestmark = pytest.mark.anyio
LIMITED = dataclasses.replace(TEST_CONFIG, rate_limit=5, rate_window_s=60)


async def test_a_token_over_its_limit_gets_429_with_retry_after(
    mgmt_settings: Settings, tokens: Tokens
) -> None:
    async with serve(mgmt_settings, tokens, LIMITED) as mgmt:
        # 45 s into a window, whatever the wall clock does: the window ends in 15 s.
        runtime = mgmt.runtime
        runtime.limiter = RateLimiter(
            runtime.cache, runtime.limiter.client, 5, 60, clock=lambda: 600_045.0
        )
        codes = [(await mgmt.call("GET", f"{PREFIX}/metrics", "viewer")).status_code
                 for _ in range(7)]  # fmt: skip
        assert codes == [200] * 5 + [429] * 2
        refused = await mgmt.call("GET", f"{PREFIX}/metrics", "viewer")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "15"
        assert refused.headers["content-type"] == PROBLEM_JSON
        assert refused.json() == {
            "type": RATE_LIMITED.type,
            "title": "Too Many Requests",
            "status": 429,
            "detail": "rate limit of 5 requests per 60s",
            "instance": f"{PREFIX}/metrics",
        }
        # Another token has its own budget.
        assert (await mgmt.call("GET", f"{PREFIX}/metrics", "operator")).status_code == 200
        # Refused actions are audited as such.
        for _ in range(6):
            last = await mgmt.call("DELETE", f"{PREFIX}/clear", params={"pattern": "x:*"})
        assert last.status_code == 429
        entry = (await mgmt.runtime.auditor.entries(who="admin-test", limit=1))[0]
        assert entry["status"] == 429 and entry["action"] == "cache.clear"


async def test_the_count_is_shared_by_every_process(
    mgmt_settings: Settings, tokens: Tokens
) -> None:
    async with (
        serve(mgmt_settings, tokens, LIMITED) as one,
        serve(mgmt_settings, tokens, LIMITED) as two,
    ):
        clock = 1_000_000.0  # one window for both limiters, whatever the wall clock does
        for m in (one, two):
            m.runtime.limiter = RateLimiter(
                m.runtime.cache, m.runtime.limiter.client, 5, 60, clock=lambda: clock
            )
        codes = [
            (await (one if i % 2 else two).call("GET", f"{PREFIX}/metrics", "viewer")).status_code
            for i in range(6)
        ]
        assert codes == [200] * 5 + [429]


async def test_without_redis_the_limit_fails_open(
    prefix: str, database_url: str, broker: RedisProcess, tokens: Tokens
) -> None:
    settings: Settings = settings_for(prefix, database_url, broker.port, redis_port=1)
    async with serve(settings, tokens, LIMITED) as mgmt:
        codes = {(await mgmt.call("GET", f"{PREFIX}/reports", "viewer")).status_code
                 for _ in range(10)}  # fmt: skip
        assert codes == {200}
