"""Replica confirmation: with ``replicas`` set, an event is acknowledged only once WAIT says
that many replicas hold it; fewer, or a master refusing writes (NOREPLICAS), is NotReplicated.

A master and a replica of the test's own; the sync buffer, the thread group recorder and the
asyncio group recorder each take the same path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio

from cache.keys import Keys
from cache.writebehind import (
    ActivityEvent,
    AsyncGroupRecorder,
    GroupRecorder,
    NotReplicated,
    WriteBehind,
    WriteBehindConfig,
)
from config import ConfigError, load_settings
from tests.support.redis_procs import RedisProcess, start_redis, start_replica, wait_for

PREFIX = "twbrepl:"


@pytest.fixture(scope="module")
def master() -> Iterator[RedisProcess]:
    with start_redis() as proc:
        yield proc


@pytest.fixture(scope="module")
def replica(master: RedisProcess) -> Iterator[RedisProcess]:
    with start_replica(master) as proc:
        # "link up" on the replica comes before its first REPLCONF ACK (sent every second):
        # until the master has one, WAIT answers 0.
        client = master.client()
        wait_for(lambda: client.set(f"{PREFIX}probe", 1) and client.wait(1, 100) == 1, 10)
        client.close()
        yield proc


def buffer(master: RedisProcess, replicas: int) -> WriteBehind:
    config = WriteBehindConfig(replicas=replicas, replica_timeout_ms=100)
    return WriteBehind(master.client(), Keys(PREFIX), config)


def events(member_id: int, count: int = 3) -> list[ActivityEvent]:
    return [ActivityEvent(member_id, "login")] * count


def test_an_event_a_replica_holds_is_acknowledged(
    master: RedisProcess, replica: RedisProcess
) -> None:
    wb = buffer(master, replicas=1)
    ids = wb.record(events(1))
    assert len(ids) == 3
    # Acknowledged means already on the replica, before any other command ran.
    copy = replica.client()
    assert [entry for entry, _ in copy.xrange(wb.stream, ids[0], ids[-1])] == [
        entry.encode() for entry in ids
    ]
    copy.close()
    assert GroupRecorder(wb).record(events(2)) and len(GroupRecorder(wb).record(events(2))) == 3


def test_more_replicas_than_answer_is_not_replicated(
    master: RedisProcess, replica: RedisProcess
) -> None:
    wb = buffer(master, replicas=2)
    before = wb.client.xlen(wb.stream)
    with pytest.raises(NotReplicated, match="1 of 2 replicas within 100 ms"):
        wb.record(events(3))
    # Never acknowledged, yet on the master: it may still be flushed (the error says so).
    assert wb.client.xlen(wb.stream) == before + 3
    with pytest.raises(NotReplicated):
        GroupRecorder(wb).record(events(4))


def test_the_asyncio_recorder_waits_on_the_same_connection(
    master: RedisProcess, replica: RedisProcess
) -> None:
    async def main() -> None:
        aio = redis.asyncio.Redis(host=master.host, port=master.port)
        try:
            confirmed = AsyncGroupRecorder(buffer(master, replicas=1), aio)
            got = await asyncio.gather(*(confirmed.record(events(m, 2)) for m in range(5, 25)))
            assert all(len(ids) == 2 for ids in got)
            refused = AsyncGroupRecorder(buffer(master, replicas=2), aio)
            with pytest.raises(NotReplicated):
                await refused.record(events(30))
        finally:
            await aio.aclose()

    asyncio.run(main())


def test_a_master_without_a_good_replica_refuses_and_records_nothing() -> None:
    with start_redis(extra={"min-replicas-to-write": "1"}) as lonely:
        wb = buffer(lonely, replicas=1)
        with pytest.raises(NotReplicated, match="no good replica"):
            wb.record(events(1))
        assert not lonely.client().exists(wb.stream)


def test_settings_keep_the_wait_below_the_socket_timeout() -> None:
    assert load_settings(writebehind_replicas=1, _env_file=None).writebehind_replicas == 1
    with pytest.raises(ConfigError, match="writebehind_replica_timeout_ms"):
        load_settings(writebehind_replica_timeout_ms=300, _env_file=None)
    with pytest.raises(ConfigError, match="standalone or Sentinel"):
        load_settings(writebehind_replicas=1, redis_cluster_nodes="127.0.0.1:7000", _env_file=None)
