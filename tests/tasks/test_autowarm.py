"""The automatic warm-up on a real (in-process) worker: a cold cache is warmed and a warm one
left alone, one warm-up at a time (the other's result names the holder), a Redis restart
noticed by the watch job is followed by a warm-up.

The cache is a redis-server of the module's own (restarted by one test); broker and results
stay on the session's (tests/workers/conftest.py). The end-to-end proof (a worker process
started against an empty cache, a ``clear`` through the management API, then HITs on every
first read) is tests/management/test_autowarm.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cache.kinds import KINDS, Warm
from config.settings import Settings
from services import Services
from tasks.autowarm import after_server_change, identity_change, missing_by_kind, missing_critical
from tasks.runtime import SOURCE
from tasks.sources import Source, SqlSource
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers.conftest import PG_MEMBERS, InProcess
from workers import routing, warmstate
from workers.runtime import Parts

CRITICAL_KEYS = sum(len(kind.variants) for kind in KINDS.warmed(Warm.CRITICAL))


def test_identity_changes_and_their_reasons() -> None:
    seen = {"run_id": "a", "master": "10.0.0.1:6379"}
    assert identity_change(seen, dict(seen)) is None
    assert identity_change(seen, seen | {"run_id": "b"}) == "redis-restart"
    assert identity_change(seen, {"run_id": "b", "master": "10.0.0.2:6379"}) == "redis-failover"
    assert identity_change(None, seen) == "redis-unknown"


LAGGING = sorted(kind.name for kind in KINDS.warmed(Warm.CRITICAL) if kind.lag)
LOOKUP = KINDS["lookup"]


def test_after_a_server_change_a_lagging_kind_is_left_to_its_readers_unless_data_was_lost() -> None:
    critical = KINDS.warmed(Warm.CRITICAL)
    assert LAGGING and not LOOKUP.lag  # the rule needs both kinds of critical kind
    retired = {kind: list(kind.variants) if kind.lag else [] for kind in critical}
    assert after_server_change(retired) == {}  # kept its data: member changes retired those
    lost = {kind: list(kind.variants) for kind in critical}
    assert after_server_change(lost) == {kind: list(kind.variants) for kind in critical}
    one_lookup = retired | {LOOKUP: [("tiers",)]}  # one lookup gone: the data was lost
    assert after_server_change(one_lookup) == {
        kind: variants for kind, variants in one_lookup.items() if variants
    }


@pytest.fixture(scope="module")
def cache_redis() -> Iterator[RedisProcess]:
    proc = start_redis(appendonly=True)  # a restart keeps the data, not the run id
    try:
        yield proc
    finally:
        proc.close()


class SlowSource:
    """The real source, slowed down where a warm-up starts: long enough for a second
    warm-up to arrive while the first holds the lease."""

    def __init__(self, inner: Source, entered: threading.Event) -> None:
        self.inner, self.entered = inner, entered

    def hottest_member_ids(self, limit: int) -> list[int]:
        self.entered.set()
        time.sleep(1.5)
        return self.inner.hottest_member_ids(limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


ENTERED = threading.Event()


def _slow_source(services: Services) -> Source:
    return SlowSource(SqlSource(services.engine), ENTERED)  # type: ignore[return-value]


@pytest.fixture
def task_env(task_env: dict[str, str], cache_redis: RedisProcess) -> dict[str, str]:
    """The cache on the module's redis-server, with the automatic warm-up on."""
    cache_redis.client().flushall()  # the module's own server: nothing else lives there
    return task_env | {
        "REDIS_PORT": str(cache_redis.port),
        "CACHE_AUTOWARM": "true",
        "CACHE_AUTOWARM_HOTTEST": str(HOTTEST),
        "CACHE_WARMUP_CHUNK_SIZE": str(CHUNK),
    }


HOTTEST = 5  # of PG_MEMBERS: the critical warm-up leaves most members cold
CHUNK = 64  # PG_MEMBERS = 200: the warm-up of every member is a chord of 4 chunks


DUTY = Settings.model_fields["cache_autowarm_duty"].default


def _cached_members(worker: InProcess) -> int:
    keys = worker.cache.keys.members(range(1, PG_MEMBERS + 1))
    return int(worker.cache.clients.writer.exists(*keys))


def test_a_clear_is_followed_by_every_member_and_a_restart_by_the_hottest(
    worker: InProcess,
) -> None:
    after_clear = worker.wait(worker.client.enqueue_auto_warm("clear"))
    assert after_clear.state == "SUCCESS", after_clear.error
    assert after_clear.result["reason"] == "clear" and after_clear.result["warmed"] is True
    assert after_clear.result["chunks"] == 4
    assert after_clear.result["duty"] == DUTY < 1  # sent by the platform: paced
    assert _cached_members(worker) == PG_MEMBERS
    assert missing_critical(worker.cache) == []
    worker.cache.clients.writer.flushdb()  # the module's own server
    after_restart = worker.run(routing.AUTO_WARM, "redis-restart")
    assert after_restart.state == "SUCCESS", after_restart.error
    assert _cached_members(worker) <= HOTTEST  # the hottest by recent payments, if any


def test_a_cold_cache_is_warmed_and_a_warm_one_left_alone(worker: InProcess) -> None:
    assert len(missing_critical(worker.cache)) == CRITICAL_KEYS
    first = worker.run(routing.AUTO_WARM, "worker-start", True)
    assert first.state == "SUCCESS", first.error
    assert first.result["warmed"] is True and first.result["cold_keys"] == CRITICAL_KEYS
    assert first.result["written"] >= CRITICAL_KEYS
    assert missing_critical(worker.cache) == []
    again = worker.run(routing.AUTO_WARM, "worker-start", True)
    assert again.result == {"reason": "worker-start", "warmed": False, "cold_keys": 0,
                            "skipped": "warm"}  # fmt: skip
    # The last run is recorded for the dashboard; nothing is left holding the lease.
    durable = worker.runtime.services.redis("durable")
    last = warmstate.decoded(durable.get(warmstate.last_key(worker.cache.keys)))
    assert last is not None and last["task_id"] == first.task_id
    assert durable.get(warmstate.lease_key(worker.cache.keys)) is None


@pytest.mark.parametrize("celery_parts", [{SOURCE: _slow_source}])
def test_one_warm_up_at_a_time_the_other_says_by_whom(
    celery_parts: Parts, worker: InProcess
) -> None:
    ENTERED.clear()
    first = worker.client.enqueue_auto_warm("redis-restart")
    assert ENTERED.wait(10), "the first warm-up did not start"
    # The warm-up after a clear (every member, in chunks) waits its turn the same way.
    second = worker.wait(worker.client.enqueue_auto_warm("clear"))
    assert second.state == "SUCCESS", second.error
    assert second.result["warmed"] is False and second.result["skipped"] == "running"
    assert second.result["by"]["task_id"] == first
    assert second.result["by"]["reason"] == "redis-restart"
    done = worker.wait(first)
    assert done.result["warmed"] is True


def test_a_redis_restart_is_noticed_and_followed_by_a_warm_up(
    worker: InProcess, cache_redis: RedisProcess
) -> None:
    seen = worker.run(routing.WATCH_REDIS)
    assert seen.result["changed"] == "redis-unknown"  # nothing recorded on a fresh server
    worker.wait(seen.result["warmup"])
    assert worker.run(routing.WATCH_REDIS).result["changed"] is None
    assert missing_critical(worker.cache) == []

    cache_redis.restart()  # AOF: the server comes back with its data and a new run id
    deadline = time.monotonic() + 20
    while True:
        after = worker.run(routing.WATCH_REDIS).result
        if after.get("reachable") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["changed"] == "redis-restart"
    assert after["identity"]["run_id"] != seen.result["identity"]["run_id"]
    warmed = worker.wait(after["warmup"])
    assert warmed.state == "SUCCESS", warmed.error
    assert missing_critical(worker.cache) == []


def test_a_failover_warm_up_fills_what_the_server_lacks(worker: InProcess) -> None:
    first = worker.run(routing.AUTO_WARM, "worker-start", True)
    assert first.state == "SUCCESS", first.error
    assert missing_critical(worker.cache) == []
    # A member change retires every report (their tags' generations move), as in production.
    changed = worker.run(routing.ON_MEMBER_CHANGE, "update", 1)
    assert changed.state == "SUCCESS", changed.error
    retired = {kind.name for kind, variants in missing_by_kind(worker.cache).items() if variants}
    assert retired == set(LAGGING)

    kept = worker.run(routing.AUTO_WARM, "redis-failover")
    assert kept.state == "SUCCESS", kept.error
    assert kept.result["warmed"] is True and kept.result["left_to_readers"] == LAGGING
    assert kept.result["written"] <= HOTTEST  # no report recomputed: only the hottest members
    still = {kind.name for kind, variants in missing_by_kind(worker.cache).items() if variants}
    assert still == set(LAGGING)

    worker.cache.clients.writer.flushdb()  # the module's own server: a replica that was empty
    lost = worker.run(routing.AUTO_WARM, "redis-failover")
    assert lost.state == "SUCCESS", lost.error
    assert lost.result["left_to_readers"] == []
    assert lost.result["written"] >= CRITICAL_KEYS
    assert missing_critical(worker.cache) == []
