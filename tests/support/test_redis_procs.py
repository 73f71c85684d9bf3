"""Tests of tests/support/redis_procs.py against real redis-server processes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_procs import (
    CLUSTER_BUS_OFFSET,
    HOST,
    RedisProcError,
    RedisProcess,
    free_port,
    make_tls_files,
    sentinel_master_addr,
    start_cluster,
    start_redis,
    start_replica,
    start_sentinels,
    wait_for,
)

pytestmark = pytest.mark.fault


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Closes every process/client entered into it, even when the test fails."""
    with ExitStack() as exit_stack:
        yield exit_stack


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((HOST, port)) != 0


def _plain_client(port: int) -> redis.Redis:
    no_retry = Retry(NoBackoff(), 0)
    return redis.Redis(
        host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2, retry=no_retry
    )


def test_free_port_is_unique_loopback_and_has_free_bus_port() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert 6379 not in ports
    for port in ports:
        assert port + CLUSTER_BUS_OFFSET <= 65535
        with socket.socket() as sock:
            sock.bind((HOST, port + CLUSTER_BUS_OFFSET))


def test_standalone_start_ping_kill(stack: ExitStack) -> None:
    proc = stack.enter_context(start_redis())
    assert proc.port != 6379
    assert proc.url == f"redis://127.0.0.1:{proc.port}"
    assert proc.dir.is_dir() and proc.conf.is_file()
    assert 'save ""' in proc.conf.read_text()
    assert _pid_exists(proc.pid)
    client = stack.enter_context(proc.client(decode_responses=True))
    assert client.ping() is True
    assert client.config_get("appendonly") == {"appendonly": "no"}

    pid = proc.pid
    proc.kill()
    assert not proc.running()
    assert proc.returncode == -9
    assert not _pid_exists(pid)
    assert _refuses(proc.port)


def test_close_removes_process_and_directory() -> None:
    with start_redis() as proc:
        pid, directory = proc.pid, proc.dir
    assert proc.closed
    assert not _pid_exists(pid)
    assert not directory.exists()
    assert _refuses(proc.port)
    proc.close()  # idempotent


def test_stop_is_graceful_and_restart_reuses_port_and_dir(stack: ExitStack) -> None:
    proc = stack.enter_context(start_redis(save="3600 1"))
    port, directory, pid = proc.port, proc.dir, proc.pid
    client = stack.enter_context(proc.client())
    client.set("k", "v")
    proc.stop()
    assert proc.returncode == 0
    assert (directory / "dump.rdb").exists()  # SIGTERM shutdown saved the RDB
    proc.restart()
    assert (proc.port, proc.dir) == (port, directory)
    assert proc.pid != pid
    assert client.get("k") == b"v"


def test_restart_with_appendonly_keeps_key_after_sigkill(stack: ExitStack) -> None:
    proc = stack.enter_context(start_redis(appendonly=True, appendfsync="always"))
    client = stack.enter_context(proc.client())
    client.set("durable", "yes")
    assert client.wait(0, 0) == 0
    proc.kill()
    proc.restart()
    assert client.get("durable") == b"yes"


def test_restart_without_persistence_loses_key(stack: ExitStack) -> None:
    proc = stack.enter_context(start_redis())
    client = stack.enter_context(proc.client())
    client.set("volatile", "1")
    proc.kill()
    proc.restart()
    assert client.get("volatile") is None


def test_config_file_requirepass_and_overrides(stack: ExitStack, tmp_path: Path) -> None:
    conf = tmp_path / "base.conf"
    conf.write_text(f"port 6379\nbind 0.0.0.0\ndir {tmp_path}\nmaxmemory-policy allkeys-lru\n")
    proc = stack.enter_context(start_redis(config_file=conf, requirepass="s3cret", maxmemory="8mb"))
    assert proc.port != 6379
    client = stack.enter_context(proc.client(decode_responses=True))
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    assert client.config_get("maxmemory") == {"maxmemory": str(8 * 1024 * 1024)}
    assert client.config_get("bind") == {"bind": HOST}
    assert client.config_get("dir") == {"dir": str(proc.dir)}
    anonymous = stack.enter_context(_plain_client(proc.port))
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("x")


def test_start_failure_reports_log_tail() -> None:
    with pytest.raises(RedisProcError, match="Bad directive"):
        start_redis(extra={"no-such-directive": "1"})


def test_refuses_shared_redis_port() -> None:
    with pytest.raises(ValueError, match="6379"):
        start_redis(port=6379)


def test_wait_for_returns_value_and_times_out() -> None:
    assert wait_for(lambda: 42, 1) == 42
    with pytest.raises(TimeoutError, match="never"):
        wait_for(lambda: False, 0.2, 0.05, message="never")


def test_replica_replicates(stack: ExitStack) -> None:
    master = stack.enter_context(start_redis(requirepass="pw"))
    replica = stack.enter_context(start_replica(master))
    assert replica.info("replication")["master_link_status"] == "up"
    writer = stack.enter_context(master.client())
    reader = stack.enter_context(replica.client())
    writer.set("replicated", "1")
    assert writer.wait(1, 5000) == 1
    assert reader.get("replicated") == b"1"
    with pytest.raises(redis.ReadOnlyError):
        reader.set("x", "1")


@pytest.mark.slow
def test_sentinel_failover_promotes_replica(stack: ExitStack) -> None:
    master = stack.enter_context(start_redis())
    replica = stack.enter_context(start_replica(master))
    sentinels: list[RedisProcess] = start_sentinels(master, count=3, quorum=2)
    for sentinel in sentinels:
        stack.enter_context(sentinel)
    assert len({s.port for s in sentinels}) == 3
    assert all(sentinel_master_addr(s, "mymaster") == master.address for s in sentinels)

    master.kill()
    wait_for(
        lambda: all(sentinel_master_addr(s, "mymaster") == replica.address for s in sentinels),
        15,
        0.1,
        message="sentinels to promote the replica",
    )
    assert replica.info("replication")["role"] == "master"


@pytest.mark.slow
def test_cluster_of_six_nodes_serves_keys_in_different_slots(stack: ExitStack) -> None:
    cluster = stack.enter_context(start_cluster(masters=3, replicas_per_master=1))
    assert len(cluster.nodes) == 6
    assert len(set(cluster.startup_nodes)) == 6
    roles = [node.info("replication")["role"] for node in cluster.nodes]
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3

    client = stack.enter_context(cluster.client(decode_responses=True))
    keys = [f"key-{i}" for i in range(20)]
    assert len({client.keyslot(k) for k in keys}) > 1
    owners = {client.get_node_from_key(k).port for k in keys}
    assert len(owners) == 3
    for key in keys:
        assert client.set(key, key.upper())
    for key in keys:
        assert client.get(key) == key.upper()


@pytest.mark.parametrize("backend", ["openssl", "cryptography"])
def test_tls_server_accepts_tls_client_and_refuses_plain(
    stack: ExitStack, tmp_path: Path, backend: Literal["openssl", "cryptography"]
) -> None:
    # Both are installed by the project (dev extra, .ci/run): missing one is a failure.
    if backend == "cryptography":
        assert importlib.util.find_spec("cryptography") is not None, "pip install cryptography"
    else:
        assert shutil.which("openssl") is not None, "apt-get install openssl"
    tls = make_tls_files(tmp_path / "tls", backend=backend)
    proc = stack.enter_context(start_redis(tls=tls))
    assert proc.url.startswith("rediss://127.0.0.1:")
    preset = stack.enter_context(proc.client())
    assert preset.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls.ca_cert)
    assert preset.ping() is True

    secure = stack.enter_context(
        redis.Redis(
            host=HOST,
            port=proc.port,
            ssl=True,
            ssl_ca_certs=str(tls.ca_cert),
            ssl_certfile=str(tls.client_cert),
            ssl_keyfile=str(tls.client_key),
            socket_timeout=5,
        )
    )
    assert secure.set("tls", "ok")
    assert secure.get("tls") == b"ok"

    plain = stack.enter_context(_plain_client(proc.port))
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()

    no_cert = stack.enter_context(
        redis.Redis(
            host=HOST,
            port=proc.port,
            ssl=True,
            ssl_ca_certs=str(tls.ca_cert),
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
    )
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        no_cert.ping()
