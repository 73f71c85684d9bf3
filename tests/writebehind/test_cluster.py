"""Write-behind on a three-master Redis Cluster started by the test: each partition's keys
under its own hash tag, the partitions on different shards, every event in PostgreSQL once."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from sqlalchemy import Engine

from cache.keys import Keys
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
    Flusher,
    WriteBehind,
    WriteBehindConfig,
    coalesce_columns,
)
from db.writebehind import read_offset
from tasks.writebehind import sql_apply
from tests.support.redis_procs import RedisCluster, start_cluster
from tests.writebehind.support import db_last_seen, db_totals, drain_side_by_side, pending_ids

pytestmark = pytest.mark.fault

PARTITIONS = 3
KIND_NAMES = ("login", "checkin", "page_view")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with start_cluster(masters=3, replicas_per_master=0) as nodes:
        yield nodes


@pytest.fixture
def client(cluster: RedisCluster) -> Iterator[SyncRedisCluster]:
    client = cluster.client()
    yield client
    client.close()


def buffer(client: SyncRedisCluster, **kw: int) -> WriteBehind:
    config = WriteBehindConfig(
        partitions=PARTITIONS, batch_size=150, linger_ms=0, block_ms=10, **kw
    )
    wb = WriteBehind(client, Keys("wbcl:"), config)
    wb.ensure_group()
    return wb


async def record_async(cluster: RedisCluster, wb: WriteBehind, events: list[ActivityEvent]) -> int:
    """Concurrent single-event writes through the API's recorder on the asyncio client."""
    nodes = [AsyncClusterNode(host, port) for host, port in cluster.startup_nodes]
    aclient = AsyncRedisCluster(startup_nodes=nodes)
    try:
        recorder = AsyncGroupRecorder(wb, aclient)
        ids = await asyncio.gather(*(recorder.record([event]) for event in events))
    finally:
        await aclient.aclose()
    return sum(map(len, ids))


def test_partitions_spread_over_shards_and_flush_exactly_once(
    cluster: RedisCluster, client: SyncRedisCluster, engine: Engine
) -> None:
    wb = buffer(client, claim_idle_ms=300)
    shard_of = [client.get_node_from_key(stream).name for stream in wb.streams]
    assert len(set(shard_of)) == PARTITIONS, shard_of  # one partition a master
    for member in range(1, 7):  # a member's counters hash to its partition's slot
        key = wb.counter_key(member, 20_000)
        assert client.keyslot(key) == client.keyslot(wb.streams[member % PARTITIONS])

    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    expected: dict[int, list[int]] = {}
    newest: dict[int, dt.datetime] = {}
    events = []
    for i in range(1800):
        member, at = 1 + i % 41, base + dt.timedelta(milliseconds=i)
        events.append(ActivityEvent(member, KIND_NAMES[i % 3], at))
        expected.setdefault(member, [0, 0, 0])[i % 3] += 1
        newest[member] = at
    for start in range(0, 1200, 40):  # writes spanning every partition: one call each
        assert len(wb.record(events[start : start + 40])) == 40
    assert asyncio.run(record_async(cluster, wb, events[1200:])) == 600
    assert wb.health().backlog == 1800
    assert wb.activity(7)["days"][0]["login"] == sum(
        1 for e in events if e.member_id == 7 and e.kind == "login"
    )  # the cached counters, read from the member's shard

    # A flusher dies after its commit, before its acknowledgement: its entries stay pending.
    crashed = wb.read_batch("crashed", 100, partition=1)
    apply = sql_apply(engine)
    rows = coalesce_columns(crashed.events)
    assert apply(wb.streams[1], crashed.events[0].id, crashed.events[-1].id, rows)
    assert len(pending_ids(client, wb.streams[1])) == 100

    # Two flusher processes' worth of consumers a partition share the work.
    time.sleep(0.35)  # the crashed consumer's entries become claimable (claim_idle_ms)
    flushers = [
        Flusher(wb, sql_apply(engine), f"flusher-{n}", p)
        for p in range(PARTITIONS)
        for n in range(2)
    ]
    drain_side_by_side(flushers, 60)

    assert db_totals(engine) == {m: tuple(v) for m, v in expected.items()}
    assert db_last_seen(engine) == newest
    assert sum(f.stats.events for f in flushers) == 1800
    assert sum(f.stats.replayed_batches for f in flushers) >= 1  # the crashed batch: a no-op
    assert all(f.stats.failures == 0 for f in flushers)
    assert all(read_offset(engine, stream) is not None for stream in wb.streams)
    health = wb.health()
    assert (health.backlog, health.pending) == (0, 0)
