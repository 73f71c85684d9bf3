"""Per-process counters published to Redis in one pipelined step, and read back merged."""

from __future__ import annotations

import threading
import time

from cache import CacheService, DataType, build_cache
from config import Settings
from workers.publisher import MetricsPublisher, process_id, read_published


def test_publish_writes_the_document_with_a_ttl_and_indexes_it(cache: CacheService) -> None:
    cache.get(cache.keys.member(1), DataType.MEMBER)  # one miss counted
    publisher = MetricsPublisher(
        cache, "worker", interval=2, extras={"lifetimes": lambda: {"member": {}}}
    )
    assert publisher.publish()
    client = cache.clients.writer
    key = cache.keys.system("metrics", publisher.process)
    assert 0 < client.ttl(key) <= publisher.ttl == 6
    assert client.zscore(cache.keys.system("processes"), publisher.process)
    found = read_published(cache)
    document = found[publisher.process]
    assert document["role"] == "worker" and document["lifetimes"] == {"member": {}}
    assert document["snapshot"]["by_type"]["member"]["misses"] == 1


def test_every_live_process_is_read_and_expired_ones_are_not(
    cache: CacheService, settings: Settings
) -> None:
    other = build_cache(settings)
    try:
        other.get(other.keys.lookup("tiers"), DataType.LOOKUP)
        first = MetricsPublisher(cache, "worker", process="worker-a")
        second = MetricsPublisher(other, "api", process="api-b")
        assert first.publish() and second.publish()
        assert set(read_published(cache)) == {"worker-a", "api-b"}
        cache.clients.writer.delete(cache.keys.system("metrics", "api-b"))  # "expired"
        assert set(read_published(cache)) == {"worker-a"}
    finally:
        other.close()


def test_the_thread_publishes_every_interval_and_flushes_on_stop(
    cache: CacheService,
) -> None:
    publisher = MetricsPublisher(cache, "worker", interval=0.1).start()
    try:
        time.sleep(0.35)
        seen = read_published(cache)[publisher.process]["published_at"]
        cache.get(cache.keys.member(5), DataType.MEMBER)
    finally:
        publisher.stop()
    last = read_published(cache)[publisher.process]
    assert last["published_at"] > seen
    assert last["snapshot"]["by_type"]["member"]["misses"] == 1  # the final flush


def test_process_ids_are_valid_key_parts() -> None:
    assert process_id("worker").startswith("worker-")
    assert all(ch.isalnum() or ch in "_.-" for ch in process_id("a b:c"))


def test_an_older_document_never_lands_after_a_newer_one(cache: CacheService) -> None:
    """The thread's publication and an explicit one (a snapshot's) in the same process: the
    one whose document was built first is written first."""
    building, release = threading.Event(), threading.Event()
    calls = iter(("older", "newer"))

    def extra() -> str:
        version = next(calls)
        if version == "older":  # the first publication is held between build and write
            building.set()
            release.wait(5)
        return version

    publisher = MetricsPublisher(cache, "api", extras={"version": extra})
    first = threading.Thread(target=publisher.publish)
    first.start()
    assert building.wait(5)
    second = threading.Thread(target=publisher.publish)
    second.start()
    time.sleep(0.2)  # the newer one, unserialized, would be written by now
    release.set()
    first.join(5)
    second.join(5)
    assert read_published(cache)[publisher.process]["version"] == "newer"
