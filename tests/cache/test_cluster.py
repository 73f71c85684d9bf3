"""The cache contract on a six-node Redis Cluster started by the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cache import MISS, NOT_FOUND, CacheService, DataType, build_cache
from config import load_settings
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
    import time

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
