"""DELETE /clear: SCAN + UNLINK under the prefix only; injection and oversized patterns refused."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from api_stub.management import PREFIX
from api_stub.management.clear import (
    MAX_PATTERN,
    MAX_STARS,
    PatternRefused,
    clear,
    hot_members,
    scan_match,
)
from cache import build_async_cache
from config import Settings
from tests.conftest import TEST_REDIS_DB
from tests.management.conftest import Mgmt, serve, settings_for

pytestmark = pytest.mark.anyio
CLEAR = f"{PREFIX}/clear"

REFUSED = [
    "",
    "x" * (MAX_PATTERN + 1),
    "*:" * (MAX_STARS + 1),
    "[a-z]*",  # character classes
    "member:[0-9]",
    "{member}:*",  # hash tags
    "member\\*",  # escapes
    "member *",
    "member:\t*",
    "member:\r\n*",
    "member:\x00",
    "member:é*",
    "sys:*",  # platform state
    "sys:{wb}:stream",
    "*%*",
    "member:*;FLUSHALL",
    "member:*\nFLUSHDB",
]


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    yield client
    client.close()


@pytest.fixture
def neighbour(shared: redis.Redis) -> Iterator[str]:
    """Keys of another tenant of the same database, which no clear may touch."""
    other = f"t{uuid.uuid4().hex[:10]}:"
    shared.mset({f"{other}member:{i}": b"x" for i in range(20)})
    shared.set(other.rstrip(":"), b"bare")
    yield other
    for key in shared.scan_iter(match=f"{other}*", count=1000):
        shared.unlink(key)
    shared.unlink(other.rstrip(":"))


@pytest.mark.parametrize("pattern", REFUSED)
async def test_malformed_or_escaping_patterns_are_422_naming_it(
    mgmt: Mgmt, pattern: str, shared: redis.Redis, neighbour: str
) -> None:
    prefix = mgmt.runtime.cache.keys.prefix
    shared.set(f"{prefix}member:1", b"kept")
    answer = await mgmt.call("DELETE", CLEAR, params={"pattern": pattern})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"] == ["query", "pattern"]
    assert shared.get(f"{prefix}member:1") == b"kept"
    assert len(set(shared.scan_iter(match=f"{neighbour}*"))) == 20


async def test_a_missing_pattern_is_422(mgmt: Mgmt) -> None:
    assert (await mgmt.call("DELETE", CLEAR)).status_code == 422


async def test_scan_match_stays_under_the_prefix(mgmt: Mgmt) -> None:
    cache = mgmt.runtime.cache
    prefix = cache.keys.prefix
    assert scan_match(cache, "member:*") == f"{prefix}member:*"
    assert scan_match(cache, "**") == f"{prefix}*"
    assert scan_match(cache, "lookup:tier?") == f"{prefix}lookup:tier?"
    assert scan_match(cache, "../*") == f"{prefix}../*"  # a glob has no paths to climb
    for pattern in REFUSED:
        with pytest.raises(PatternRefused):
            scan_match(cache, pattern)


async def test_clear_deletes_only_matching_keys_under_the_prefix(
    mgmt: Mgmt, shared: redis.Redis, neighbour: str
) -> None:
    prefix = mgmt.runtime.cache.keys.prefix
    shared.mset({f"{prefix}member:{i}": b"m" for i in range(2500)})
    shared.mset({f"{prefix}lookup:{name}": b"l" for name in ("tiers", "countries")})
    shared.xadd(f"{prefix}sys:{{wb}}:stream", {"m": "1"})  # durable platform state
    dry = await mgmt.call("DELETE", CLEAR, params={"pattern": "member:*", "dry_run": "true"})
    assert dry.status_code == 200
    assert dry.json()["matched"] >= 2500 and dry.json()["deleted"] == 0
    assert shared.exists(f"{prefix}member:7")

    done = (await mgmt.call("DELETE", CLEAR, params={"pattern": "member:*"})).json()
    assert done["deleted"] == 2500
    assert done["steps"] > 1  # batches, not one call
    assert not list(shared.scan_iter(match=f"{prefix}member:*"))
    assert shared.exists(f"{prefix}lookup:tiers")

    everything = (await mgmt.call("DELETE", CLEAR, params={"pattern": "*"})).json()
    assert everything["deleted"] == 2
    assert everything["skipped_system"] >= 1  # the stream, and the rate limit's counter
    assert shared.xlen(f"{prefix}sys:{{wb}}:stream") == 1
    assert len(set(shared.scan_iter(match=f"{neighbour}*"))) == 20
    assert shared.get(neighbour.rstrip(":")) == b"bare"


async def test_clear_is_audited_with_its_count(mgmt: Mgmt, shared: redis.Redis) -> None:
    prefix = mgmt.runtime.cache.keys.prefix
    shared.mset({f"{prefix}analytics:a{i}": b"a" for i in range(3)})
    await mgmt.call("DELETE", CLEAR, params={"pattern": "analytics:*"})
    entry = (await mgmt.call("GET", f"{PREFIX}/audit", params={"action": "cache.clear"})).json()[
        "entries"
    ][0]
    assert entry["who"] == "admin-test" and entry["status"] == 200
    assert entry["arguments"] == {"pattern": "analytics:*", "dry_run": False}
    assert entry["result"]["deleted"] == 3 and entry["finished_at"]


async def test_clear_without_redis_is_503_and_audited(
    database_url: str, broker: object, tokens: object, prefix: str
) -> None:
    settings: Settings = settings_for(
        prefix,
        database_url,
        broker.port,
        redis_port=1,
        redis_connect_timeout=0.05,  # type: ignore[attr-defined]
    )
    async with serve(settings, tokens) as mgmt:  # type: ignore[arg-type]
        answer = await mgmt.call("DELETE", CLEAR, params={"pattern": "member:*"})
        assert answer.status_code == 503
        entries = await mgmt.runtime.auditor.entries(action="cache.clear", limit=1)
        assert entries[0]["status"] == 503


async def test_a_key_built_by_the_cache_is_what_clear_matches(settings: Settings) -> None:
    cache = build_async_cache(settings)
    try:
        assert scan_match(cache, "member:*").startswith(settings.redis_key_prefix)
    finally:
        await cache.close()


async def test_the_members_read_here_are_what_the_warm_up_after_a_clear_fills_first(
    mgmt: Mgmt,
) -> None:
    for member_id in (3, 1, 2, 3, 1, 2, 1):  # a MISS, then HITs that the near tier keeps
        answer = await mgmt.call("GET", f"/api/v1/members/{member_id}", None)
        assert answer.status_code == 200, answer.text
    cache = mgmt.runtime.cache
    assert hot_members(cache, "*", 10) == [1, 2, 3]  # the most recently read first
    assert hot_members(cache, "member:*", 2) == [1, 2]
    assert hot_members(cache, "member:2*", 10) == [2]
    assert hot_members(cache, "analytics:*", 10) == []  # the records stay: nothing to refill
    assert hot_members(cache, "sys:*", 10) == []  # refused by the clear as well


async def test_the_first_keys_go_in_one_step_before_the_scan_which_then_spares_them(
    mgmt: Mgmt, shared: redis.Redis
) -> None:
    cache = mgmt.runtime.cache
    prefix = cache.keys.prefix
    shared.mset({f"{prefix}member:{i}": b"old" for i in range(1, 3001)})
    hot = cache.keys.members([7, 8])
    seen: list[int] = []

    async def refill() -> None:  # as the warm-up of the first keys does, while the scan runs
        seen.append(int(shared.exists(*hot)))
        shared.set(hot[0], b"refilled")

    done = await clear(cache, "member:*", dry_run=False, batch=500, first=hot, refill=refill)
    assert seen == [0]  # both were gone before the refill was sent
    assert done.deleted == done.matched == 3000 and done.steps > 2
    assert shared.get(hot[0]) == b"refilled"  # written after the clear began: kept
    assert shared.exists(f"{prefix}member:1") == 0
    assert list(shared.scan_iter(f"{prefix}sys:clear:*")) == [], "the spared set stays behind"


async def test_a_paced_clear_rests_between_its_steps(mgmt: Mgmt, shared: redis.Redis) -> None:
    """At duty 0.25 each step is followed by a rest three times as long: the clear takes
    about four times its steps' time, and still deletes every key."""
    cache = mgmt.runtime.cache
    prefix = cache.keys.prefix
    took: dict[float, float] = {}
    for duty in (1.0, 0.25):
        shared.mset({f"{prefix}member:{i}": b"old" for i in range(1, 10_001)})
        started = time.perf_counter()
        done = await clear(cache, "member:*", dry_run=False, batch=250, duty=duty)
        took[duty] = time.perf_counter() - started
        assert done.deleted == 10_000 and done.steps >= 40
    assert took[0.25] >= 2 * took[1.0], took
