"""Connections from settings: TLS, and reads from a replica through Sentinel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cache import CacheService, DataType, build_async_cache, build_cache
from config import load_settings
from tests.support.redis_procs import (
    make_tls_files,
    start_redis,
    start_replica,
    start_sentinels,
    wait_for,
)

pytestmark = pytest.mark.fault


def test_tls_round_trip_and_plain_refused(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with start_redis(tls=tls) as server:
        common = {
            "redis_host": "127.0.0.1",
            "redis_port": server.port,
            "_env_file": None,
            "redis_key_prefix": "tls:",
        }
        secure = build_cache(
            load_settings(
                redis_tls=True,
                redis_tls_ca_file=str(tls.ca_cert),
                redis_tls_cert_file=str(tls.client_cert),
                redis_tls_key_file=str(tls.client_key),
                **common,
            )
        )
        plain = build_cache(load_settings(**common))
        try:
            assert secure.set(secure.keys.member(1), {"tls": True}, DataType.MEMBER)
            assert secure.get(secure.keys.member(1), DataType.MEMBER) == {"tls": True}
            assert not plain.ping()
            assert not plain.set(plain.keys.member(2), 1)  # refused, counted, not raised
            assert plain.metrics.of(DataType.DEFAULT).skipped_writes == 1
        finally:
            secure.close()
            plain.close()


def test_reads_from_a_replica_when_allowed() -> None:
    with start_redis() as master, start_replica(master) as replica:
        sentinels = start_sentinels(master, count=3)
        cache: CacheService | None = None
        try:
            cache = build_cache(
                load_settings(
                    redis_sentinels=",".join(f"127.0.0.1:{s.port}" for s in sentinels),
                    redis_read_from_replica=True,
                    redis_key_prefix="rep:",
                    _env_file=None,
                )
            )
            key = cache.keys.lookup("tiers")
            # A value present only on the replica proves where reads go.
            master.client().set("probe", "x")
            wait_for(lambda: replica.client().get("probe") == b"x", timeout=5)
            assert cache.set(key, ["gold"], DataType.LOOKUP)
            wait_for(lambda: cache.get(key, DataType.LOOKUP) == ["gold"], timeout=5)
            served_by = cache.clients.reader.execute_command("INFO", "replication")["role"]
            assert served_by == "slave"
        finally:
            if cache is not None:
                cache.close()
            for sentinel in sentinels:
                sentinel.close()


def test_async_sentinel_callers_beyond_the_pool_queue_instead_of_failing() -> None:
    """The API's Sentinel pool holds at most REDIS_MAX_CONNECTIONS and queues the callers
    beyond it, as the standalone pool does: a burst is not an outage for the breaker."""
    with start_redis() as master:
        sentinels = start_sentinels(master, count=1)
        try:
            settings = load_settings(
                redis_sentinels=",".join(f"127.0.0.1:{s.port}" for s in sentinels),
                redis_max_connections=2,
                # The queue's wait is 4 socket timeouts: ample for 40 GETs on a loaded machine.
                redis_socket_timeout=2.0,
                redis_key_prefix="burst:",
                _env_file=None,
            )

            async def burst() -> list[object]:
                cache = build_async_cache(settings)
                try:
                    writer = cache.clients.writer
                    # 40 callers at once: unqueued, each would open a connection of its own.
                    found = await asyncio.gather(
                        *(writer.get(f"burst:{i}") for i in range(40)), return_exceptions=True
                    )
                    pool = writer.connection_pool
                    assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
                    return found
                finally:
                    await cache.close()

            assert asyncio.run(burst()) == [None] * 40
        finally:
            for sentinel in sentinels:
                sentinel.close()
