"""Replica confirmation: with ``replicas`` set, an event is acknowledged only once WAIT says
that many replicas hold it; fewer, or a master refusing writes (NOREPLICAS), is NotReplicated.

A master and a replica of the test's own; the sync buffer, the thread group recorder and the
asyncio group recorder each take the same path.
"""

from __future__ import annotations

import asyncio
import os
import signal
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


def test_too_few_online_replicas_refuse_before_recording(
    master: RedisProcess, replica: RedisProcess
) -> None:
    wb = buffer(master, replicas=2)
    before = wb.client.xlen(wb.stream)
    with pytest.raises(NotReplicated, match="not recorded: the master has 1 of 2") as refused:
        wb.record(events(3))
    assert refused.value.recorded is False
    with pytest.raises(NotReplicated):
        GroupRecorder(wb).record(events(4))
    assert wb.client.xlen(wb.stream) == before  # a retry is safe: nothing was taken


def test_a_stalled_replica_is_not_replicated_though_recorded(
    master: RedisProcess, replica: RedisProcess
) -> None:
    """The master still counts the replica online, but it does not confirm within the
    timeout: the events are on the master and the error says a retry may count them twice."""
    wb = buffer(master, replicas=1)
    wb.record(events(5))  # the gate has looked: one replica online
    before = wb.client.xlen(wb.stream)
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with pytest.raises(NotReplicated, match="confirmed by 0 of 1 replicas") as short:
            wb.record(events(6))
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert short.value.recorded is True
    assert wb.client.xlen(wb.stream) == before + 3


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
            with pytest.raises(NotReplicated, match="not recorded"):
                await refused.record(events(30))
        finally:
            await aio.aclose()

    asyncio.run(main())


def test_a_master_without_a_good_replica_refuses_and_records_nothing() -> None:
    with start_redis(extra={"min-replicas-to-write": "1"}) as lonely:
        # Required by the buffer: its gate refuses before the script runs.
        with pytest.raises(NotReplicated, match="has 0 of 1 replicas online") as gated:
            buffer(lonely, replicas=1).record(events(1))
        # Required only by the server (min-replicas-to-write): NOREPLICAS, the same error.
        wb = buffer(lonely, replicas=0)
        with pytest.raises(NotReplicated, match="no good replica") as refused:
            wb.record(events(1))
        assert not gated.value.recorded and not refused.value.recorded
        assert not lonely.client().exists(wb.stream)


def test_settings_keep_the_wait_below_the_socket_timeout() -> None:
    assert load_settings(writebehind_replicas=1, _env_file=None).writebehind_replicas == 1
    with pytest.raises(ConfigError, match="writebehind_replica_timeout_ms"):
        load_settings(writebehind_replica_timeout_ms=300, _env_file=None)
    with pytest.raises(ConfigError, match="standalone or Sentinel"):
        load_settings(writebehind_replicas=1, redis_cluster_nodes="127.0.0.1:7000", _env_file=None)
