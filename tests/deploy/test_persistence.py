"""Persistence and eviction of the rendered master config, on a real redis-server.

Durable keys (Celery queues and unacked sets, the write-behind stream, the outbox) carry no
TTL; cache keys always carry one. The master must keep every durable key across a crash
(AOF, fsync every second) and under memory pressure (volatile-lfu evicts only keys with a TTL).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from cache.keys import Keys
from tests.deploy.conftest import PREFIX, STANDALONE, Deployment, info
from tests.support.redis_procs import RedisProcess, wait_for

pytestmark = pytest.mark.fault

QUEUE = "cache.writebehind"
UNACKED = "unacked"
STREAM = Keys(PREFIX).writebehind("stream")  # the buffer's own key
OUTBOX = f"{PREFIX}sys:outbox"


def write_durable(client: redis.Redis, count: int, size: int = 64) -> None:
    """Queue messages, unacked deliveries, stream entries and outbox entries: no TTL."""
    payload = b"m" * size
    pipe = client.pipeline(transaction=False)
    for number in range(count):
        pipe.lpush(QUEUE, payload + str(number).encode())
        pipe.hset(UNACKED, f"tag-{number}", payload)
        pipe.xadd(STREAM, {"member": str(number), "payload": payload})
        pipe.hset(OUTBOX, f"{PREFIX}member:{number}", "invalidate")
    pipe.execute()


def durable_counts(client: redis.Redis) -> dict[str, int]:
    return {
        QUEUE: client.llen(QUEUE),
        UNACKED: client.hlen(UNACKED),
        STREAM: client.xlen(STREAM),
        OUTBOX: client.hlen(OUTBOX),
    }


def assert_no_ttl(client: redis.Redis) -> None:
    for key in (QUEUE, UNACKED, STREAM, OUTBOX):
        assert client.ttl(key) == -1, key


def test_durable_keys_survive_a_crash_through_the_aof(
    deployment: Deployment, master: RedisProcess
) -> None:
    client = deployment.client(master, "worker")
    try:
        persistence = client.info("persistence")
        assert persistence["aof_enabled"] == 1
        write_durable(client, 500)
        client.set(f"{PREFIX}member:cached", b"v", ex=3600)
        before = durable_counts(client)
        last_entry = client.xrevrange(STREAM, count=1)
    finally:
        client.close()
    # SIGKILL straight after the replies: everysec fsyncs later, but Redis writes the AOF
    # before it answers, so what a client saw acknowledged is in the kernel already.
    master.kill()
    master.restart()
    admin = deployment.client(master)
    try:
        wait_for(lambda: admin.info("persistence")["loading"] == 0, 10, message="AOF loaded")
        assert before == dict.fromkeys((QUEUE, UNACKED, STREAM, OUTBOX), 500)
        assert durable_counts(admin) == before
        assert admin.xrevrange(STREAM, count=1) == last_entry
        assert_no_ttl(admin)
        assert 0 < admin.ttl(f"{PREFIX}member:cached") <= 3600
        assert admin.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        admin.close()
    assert (master.dir / "appendonlydir").is_dir()


def fill_cache(client: redis.Redis, start: int, count: int, value: bytes) -> None:
    pipe = client.pipeline(transaction=False)
    for number in range(start, start + count):
        pipe.set(f"{PREFIX}member:{number}", value, ex=3600)
    pipe.execute()


def test_memory_pressure_evicts_cache_keys_and_never_durable_ones(
    make_deployment: Callable[..., Deployment],
) -> None:
    deployment = make_deployment(REDIS_MAXMEMORY="8mb")
    with deployment.start_master(extra=STANDALONE) as master:
        app = deployment.client(master, "app")
        worker = deployment.client(master, "worker")
        try:
            write_durable(worker, 2000)
            value = b"c" * 1024
            written = 0
            # Four times maxmemory of cache entries, all with a TTL.
            while written < 32 * 1024:
                fill_cache(app, written, 512, value)
                written += 512
            stats = info(deployment.client(master), "stats")
            memory = info(deployment.client(master), "memory")
            assert stats["evicted_keys"] > 0
            assert memory["maxmemory_policy"] == "volatile-lfu"
            assert memory["maxmemory"] == 8 * 1024 * 1024
            assert durable_counts(worker) == dict.fromkeys((QUEUE, UNACKED, STREAM, OUTBOX), 2000)
            assert_no_ttl(worker)

            # Durable writes go on, evicting cache keys, until no key with a TTL is left:
            # then the server refuses the write (OOM) instead of dropping a queued task.
            acknowledged = 2000
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for _ in range(100_000):
                    worker.lpush(QUEUE, value)
                    acknowledged += 1
            assert worker.llen(QUEUE) == acknowledged
            assert durable_counts(worker)[STREAM] == 2000
            assert_no_ttl(worker)
            cached_left = info(deployment.client(master), "keyspace")["db0"]["expires"]
            assert cached_left < written / 10
        finally:
            app.close()
            worker.close()
