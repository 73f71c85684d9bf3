"""Redis dying, hanging and failing over under a running service (own redis-servers)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from cache import MISS, CacheService, DataType, build_cache
from cache.breaker import BreakerState
from config import load_settings
from tests.support.redis_procs import (
    RedisProcess,
    start_redis,
    start_replica,
    start_sentinels,
    wait_for,
)

pytestmark = pytest.mark.fault


def _service(port: int, **overrides: object) -> CacheService:
    return build_cache(
        load_settings(
            redis_host="127.0.0.1",
            redis_port=port,
            redis_key_prefix="fault:",
            cache_breaker_failures=3,
            cache_breaker_reset_seconds=0.5,
            _env_file=None,
            **overrides,
        )
    )


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    with start_redis(appendonly=True, appendfsync="always") as proc:
        yield proc


def _timed_calls(cache: CacheService, seconds: float) -> list[float]:
    """get_or_load in a loop; every call must return the loader's value. Durations in s."""
    durations = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        key = cache.keys.member(n % 50)
        started = time.perf_counter()
        value = cache.get_or_load(key, lambda n=n: {"id": n % 50}, DataType.MEMBER)
        durations.append(time.perf_counter() - started)
        assert value == {"id": n % 50}
    return durations


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_killed_redis_fails_open_then_recovers(server: RedisProcess) -> None:
    cache = _service(server.port)
    try:
        _timed_calls(cache, 0.3)
        server.kill()
        _timed_calls(cache, 0.2)  # the breaker opens on the first failures
        assert cache.breaker.state is not BreakerState.CLOSED
        open_durations = _timed_calls(cache, 0.4)
        assert cache.metrics.breaker_skips > 0
        assert _p99(open_durations) < 0.005, f"p99 {_p99(open_durations) * 1000:.2f} ms"

        server.restart()
        key = cache.keys.member("recovered")
        wait_for(lambda: cache.set(key, "back", DataType.MEMBER), timeout=10, interval=0.1)
        assert cache.get(key, DataType.MEMBER) == "back"
        assert cache.breaker.state is BreakerState.CLOSED
    finally:
        cache.close()


def test_hung_redis_costs_microseconds_once_the_breaker_opens(server: RedisProcess) -> None:
    cache = _service(server.port, redis_socket_timeout=0.2)
    try:
        _timed_calls(cache, 0.2)
        os.kill(server.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            started = time.monotonic()
            while cache.breaker.state is BreakerState.CLOSED:
                _timed_calls(cache, 0.01)
                assert time.monotonic() - started < 5
            open_durations = _timed_calls(cache, 0.4)
            assert _p99(open_durations) < 0.005, f"p99 {_p99(open_durations) * 1000:.2f} ms"
        finally:
            os.kill(server.pid, signal.SIGCONT)
        wait_for(lambda: cache.ping(), timeout=10, interval=0.1)
    finally:
        cache.close()


def test_invalidation_during_an_outage_is_replayed_before_any_read(server: RedisProcess) -> None:
    cache = _service(server.port, redis_socket_timeout=0.2)
    try:
        key = cache.keys.member(1)
        assert cache.set(key, {"name": "old"}, DataType.MEMBER)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            assert cache.delete(key) == 0  # could not reach Redis: kept, not dropped
            assert len(cache.core.outbox) == 1
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # Redis still holds the old value; the first read after recovery must not see it.
        wait_for(lambda: cache.breaker.allow(), timeout=5, interval=0.05)
        cache.breaker.success()
        assert cache.get(key, DataType.MEMBER) is MISS
        assert len(cache.core.outbox) == 0 and cache.metrics.outbox_replayed == 1
        assert not server.client().exists(key)
    finally:
        cache.close()


def test_failed_write_through_invalidates_instead(server: RedisProcess) -> None:
    cache = _service(server.port, redis_socket_timeout=0.2)
    try:
        key = cache.keys.member(2)
        assert cache.write_through(key, {"v": 1}, 1, DataType.MEMBER)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            assert not cache.write_through(key, {"v": 2}, 2, DataType.MEMBER)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        wait_for(lambda: cache.ping(), timeout=10, interval=0.1)
        # Never the stale v1. The stopped server still ran the write it had received once it
        # went on: v2 is there, and the outbox's retirement at v2 keeps it (a miss when the
        # write never arrived).
        assert cache.get(key, DataType.MEMBER) in (MISS, {"v": 2})
        assert len(cache.core.outbox) == 0
    finally:
        cache.close()


def test_sentinel_failover_without_restart() -> None:
    with start_redis() as master, start_replica(master) as replica:
        sentinels = start_sentinels(master, count=3, down_after_ms=1000, failover_timeout_ms=5000)
        try:
            cache = build_cache(
                load_settings(
                    redis_sentinels=",".join(f"127.0.0.1:{s.port}" for s in sentinels),
                    redis_sentinel_master="mymaster",
                    redis_key_prefix="fault:",
                    cache_breaker_failures=3,
                    cache_breaker_reset_seconds=0.3,
                    _env_file=None,
                )
            )
            try:
                key = cache.keys.member(1)
                assert cache.set(key, "before", DataType.MEMBER)
                master.kill()
                started = time.monotonic()
                served = []
                while time.monotonic() - started < 30:
                    # Reads keep answering from the loader while there is no master.
                    served.append(cache.get_or_load(key, lambda: "loader", DataType.MEMBER))
                    if cache.set(cache.keys.member(2), "after", DataType.MEMBER):
                        break
                    time.sleep(0.05)
                recovery = time.monotonic() - started
                assert cache.get(cache.keys.member(2), DataType.MEMBER) == "after", recovery
                assert recovery < 30
                assert replica.info("replication")["role"] == "master"
                assert set(served) <= {"before", "loader"}
            finally:
                cache.close()
        finally:
            for sentinel in sentinels:
                sentinel.close()
