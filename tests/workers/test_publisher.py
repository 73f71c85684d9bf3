"""Per-process counters published to Redis in one pipelined step, and read back merged."""

from __future__ import annotations

import time

from cache import CacheService, DataType, build_cache
from config import Settings
from workers.publisher import MetricsPublisher, process_id, read_published


def test_publish_writes_the_document_with_a_ttl_and_indexes_it(unit_cache: CacheService) -> None:
    unit_cache.get(unit_cache.keys.member(1), DataType.MEMBER)  # one miss counted
    publisher = MetricsPublisher(
        unit_cache, "worker", interval=2, extras={"lifetimes": lambda: {"member": {}}}
    )
    assert publisher.publish()
    client = unit_cache.clients.writer
    key = unit_cache.keys.system("metrics", publisher.process)
    assert 0 < client.ttl(key) <= publisher.ttl == 6
    assert client.zscore(unit_cache.keys.system("processes"), publisher.process)
    found = read_published(unit_cache)
    document = found[publisher.process]
    assert document["role"] == "worker" and document["lifetimes"] == {"member": {}}
    assert document["snapshot"]["by_type"]["member"]["misses"] == 1


def test_every_live_process_is_read_and_expired_ones_are_not(
    unit_cache: CacheService, unit_settings: Settings
) -> None:
    other = build_cache(unit_settings)
    try:
        other.get(other.keys.lookup("tiers"), DataType.LOOKUP)
        first = MetricsPublisher(unit_cache, "worker", process="worker-a")
        second = MetricsPublisher(other, "api", process="api-b")
        assert first.publish() and second.publish()
        assert set(read_published(unit_cache)) == {"worker-a", "api-b"}
        unit_cache.clients.writer.delete(unit_cache.keys.system("metrics", "api-b"))  # "expired"
        assert set(read_published(unit_cache)) == {"worker-a"}
    finally:
        other.close()


def test_the_thread_publishes_every_interval_and_flushes_on_stop(
    unit_cache: CacheService,
) -> None:
    publisher = MetricsPublisher(unit_cache, "worker", interval=0.1).start()
    try:
        time.sleep(0.35)
        seen = read_published(unit_cache)[publisher.process]["published_at"]
        unit_cache.get(unit_cache.keys.member(5), DataType.MEMBER)
    finally:
        publisher.stop()
    last = read_published(unit_cache)[publisher.process]
    assert last["published_at"] > seen
    assert last["snapshot"]["by_type"]["member"]["misses"] == 1  # the final flush


def test_process_ids_are_valid_key_parts() -> None:
    assert process_id("worker").startswith("worker-")
    assert all(ch.isalnum() or ch in "_.-" for ch in process_id("a b:c"))
