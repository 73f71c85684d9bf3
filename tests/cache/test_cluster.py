"""The cache contract on a six-node Redis Cluster started by the test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from redis.exceptions import RedisError

from cache import MISS, NOT_FOUND, CacheService, DataType, build_cache
from config import load_settings
from services import Services
from tests.support.redis_procs import RedisCluster, start_cluster

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with start_cluster(masters=3, replicas_per_master=1) as nodes:
        yield nodes


@pytest.fixture
def ccache(cluster: RedisCluster) -> Iterator[CacheService]:
    nodes = ",".join(f"{host}:{port}" for host, port in cluster.startup_nodes)
    service = build_cache(
        load_settings(redis_cluster_nodes=nodes, redis_key_prefix="cl:", _env_file=None)
    )
    assert service.clients.mode == "cluster"
    yield service
    service.close()


def test_contract_on_cluster(ccache: CacheService) -> None:
    keys = ccache.keys.members(range(100))  # spread over all three masters
    assert ccache.set_many({key: {"n": i} for i, key in enumerate(keys)}, DataType.MEMBER)
    assert ccache.get_many(keys, DataType.MEMBER) == [{"n": i} for i in range(100)]
    assert ccache.get(keys[7], DataType.MEMBER) == {"n": 7}

    # Lua scripts touch a key and its lease: same slot by construction.
    assert ccache.write_through(keys[1], {"v": 5}, 5, DataType.MEMBER)
    assert not ccache.write_through(keys[1], {"v": 4}, 4, DataType.MEMBER)
    fresh = ccache.keys.member("new")
    assert ccache.get_or_load(fresh, lambda: {"loaded": 1}, DataType.MEMBER) == {"loaded": 1}
    assert ccache.get_or_load(ccache.keys.member("gone"), lambda: NOT_FOUND) is NOT_FOUND

    assert ccache.delete(*keys, fresh) == 101
    assert ccache.get_many(keys[:3], DataType.MEMBER) == [MISS] * 3
    assert ccache.metrics.of(DataType.MEMBER).errors == 0


def test_cluster_survives_a_killed_master(cluster: RedisCluster, ccache: CacheService) -> None:
    keys = ccache.keys.members(range(200, 260))
    assert ccache.set_many({key: {"n": i} for i, key in enumerate(keys)}, DataType.MEMBER)
    masters = [node for node in cluster.nodes if node.info("replication")["role"] == "master"]
    victim = masters[0]
    victim.kill()
    started = time.monotonic()
    recovered = None
    while time.monotonic() - started < 30:
        # Reads keep answering throughout: from Redis, or from the loader while a slot has
        # no master.
        for i, key in enumerate(keys):
            value = ccache.get_or_load(key, lambda i=i: {"n": i}, DataType.MEMBER)
            assert value == {"n": i}
        probe = ccache.keys.member(f"probe{int(time.monotonic() * 1000)}")
        if (
            all(ccache.set(ccache.keys.member(f"w{i}"), i) for i in range(30))
            and ccache.get(probe) is MISS
        ):
            recovered = time.monotonic() - started
            break
        time.sleep(0.2)
    assert recovered is not None, "the cluster did not promote a replica within 30 s"
    print(f"cluster master SIGKILL: writes to every slot again after {recovered:.1f} s")
    assert ccache.get(ccache.keys.member("w0")) == 0


def _until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check``; a node that resets connections mid-failover answers "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (RedisError, OSError):
            pass
        time.sleep(0.005)
    return False


def test_the_near_tier_tracks_every_primary_through_a_failover(cluster: RedisCluster) -> None:
    nodes = ",".join(f"{host}:{port}" for host, port in cluster.startup_nodes)
    settings = load_settings(
        redis_cluster_nodes=nodes,
        redis_key_prefix="clnear:",
        cache_breaker_reset_seconds=0.3,
        _env_file=None,
    )
    with Services.open(settings, near=True) as services:
        tracker, near, cache = services.tracker, services.core.near, services.cache
        assert tracker is not None and near is not None and tracker.wait_connected(10)
        live = [n for n in cluster.nodes if n.running()]
        masters = [n for n in live if n.info("replication")["role"] == "master"]
        assert len(tracker.client_ids) == len(masters) == 3  # one tracking connection each
        writer = build_cache(settings)
        try:
            keys = cache.keys.members(range(30))
            owners = {writer.clients.writer.get_node_from_key(key).name for key in keys}
            assert len(owners) == 3  # the keys live on every primary

            def served(version: int) -> bool:
                return all(cache.get(key, DataType.MEMBER) == {"v": version} for key in keys)

            for version in (1, 2):
                assert all(
                    writer.write_through(k, {"v": version}, version, DataType.MEMBER) for k in keys
                )
                # Each primary pushes its own keys' writes: the near copies follow within 1 s.
                assert _until(lambda v=version: served(v), 1.0)
            assert len(near) == 30

            # A primary that still has a replica fails: its tracking connection drops, the tier
            # is flushed and tracks the promoted replica.
            victim = next(n for n in masters if n.info("replication")["connected_slaves"])
            sessions = tracker.sessions
            victim.kill()
            assert _until(lambda: tracker.sessions > sessions and len(tracker.client_ids) == 3, 40)
            assert _until(
                lambda: all(writer.write_through(k, {"v": 3}, 3, DataType.MEMBER) for k in keys),
                40,
            )
            assert _until(lambda: served(3), 10)
            assert all(writer.write_through(k, {"v": 4}, 4, DataType.MEMBER) for k in keys)
            assert _until(lambda: served(4), 1.0)  # pushed by the new primary too
            hits = near.counters.hits
            assert served(4) and len(near) == 30 and near.counters.hits >= hits + 30
        finally:
            writer.close()
