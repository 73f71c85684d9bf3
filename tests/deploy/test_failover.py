"""Replication and Sentinel failover with the rendered master, replica and sentinel configs.

Every process runs from deploy/redis as rendered for production, min-replicas-to-write and the
Sentinel timings included; only listen addresses, ports and directories differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.sentinel import Sentinel

from cache.keys import Keys
from tests.deploy.app_stack import sentinel_cluster
from tests.deploy.conftest import MASTER_NAME, PREFIX, Deployment
from tests.support.redis_procs import HOST, RedisProcess, wait_for

pytestmark = pytest.mark.fault

RECOVERY_TARGET_SECONDS = 10.0
STREAM = Keys(PREFIX).writebehind("stream")  # the buffer's own key
# Client timeouts as the platform sets them (config/settings.py: 0.25 s), a little looser for
# a loaded test machine; a failover must not wait on a dead socket.
CLIENT_TIMEOUT = 0.5


def test_the_master_takes_writes_only_with_a_replica(deployment: Deployment) -> None:
    with deployment.start_master() as master:
        app = deployment.client(master, "app")
        try:
            with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
                app.set(f"{PREFIX}member:1", b"v", ex=60)
            # The replica logs in as the ACL user "replication"; once it is in sync the master
            # accepts writes, and WAIT sees them acknowledged by one replica.
            with deployment.start_replica(master) as replica:
                # Counted once its first REPLCONF ACK is in (replicas ack every second).
                wait_for(
                    lambda: deployment.replication(master)["min_slaves_good_slaves"],
                    10,
                    message="the master to count a good replica",
                )
                assert app.set(f"{PREFIX}member:1", b"v", ex=60)
                assert app.wait(1, 2000) == 1
                copy = deployment.client(replica, "app")
                try:
                    assert copy.get(f"{PREFIX}member:1") == b"v"
                    with pytest.raises(redis.exceptions.ReadOnlyError):
                        copy.set(f"{PREFIX}member:2", b"v")
                finally:
                    copy.close()
        finally:
            app.close()


@pytest.fixture
def cluster(
    make_deployment: Callable[..., Deployment],
) -> Iterator[tuple[Deployment, RedisProcess, RedisProcess, list[RedisProcess]]]:
    with sentinel_cluster(make_deployment()) as started:
        yield started.deployment, started.master, started.replica, started.sentinels


@pytest.mark.slow
def test_sentinel_fails_over_to_the_replica_in_under_10_seconds(
    cluster: tuple[Deployment, RedisProcess, RedisProcess, list[RedisProcess]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    deployment, master, replica, sentinels = cluster
    sentinel = Sentinel(
        [s.address for s in sentinels],
        sentinel_kwargs={
            "password": deployment.env["REDIS_SENTINEL_PASSWORD"],
            "socket_timeout": CLIENT_TIMEOUT,
            **deployment.tls.client_kwargs(),
        },
        username="app",
        password=deployment.password("app"),
        socket_timeout=CLIENT_TIMEOUT,
        socket_connect_timeout=CLIENT_TIMEOUT,
        **deployment.tls.client_kwargs(),
    )
    client = sentinel.master_for(MASTER_NAME)
    try:
        # Write-behind entries, each acknowledged only once a replica has it (WAIT 1).
        acknowledged = []
        for number in range(200):
            entry = client.xadd(STREAM, {"member": str(number)})
            if client.wait(1, 1000) == 1:
                acknowledged.append(entry)
        assert len(acknowledged) == 200

        master.kill()  # SIGKILL: no goodbye to the replica or the Sentinels
        killed_at = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                client.set(f"{PREFIX}failover:probe", str(attempts), ex=60)
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                if time.monotonic() - killed_at > 3 * RECOVERY_TARGET_SECONDS:
                    raise
                time.sleep(0.05)
        recovery = time.monotonic() - killed_at

        promoted = sentinel.discover_master(MASTER_NAME)
        survived = {entry for entry, _ in client.xrange(STREAM)}
        lost = len(set(acknowledged) - survived)
        with capsys.disabled():
            print(
                f"\nfailover: {recovery:.2f} s from SIGKILL of the master to the first write"
                f" through Sentinel (target < {RECOVERY_TARGET_SECONDS:.0f} s);"
                f" acknowledged write-behind entries lost: {lost} of {len(acknowledged)}"
            )
        assert promoted == replica.address
        assert recovery < RECOVERY_TARGET_SECONDS
        assert lost == 0

        # The old master comes back from its AOF; the Sentinels turn it into a replica of the
        # new master (as the ACL user "sentinel": REPLICAOF, CONFIG REWRITE).
        master.restart()
        wait_for(
            lambda: deployment.replication(master).get("master_port") == replica.port,
            30,
            0.2,
            message="the old master to rejoin as a replica",
        )
        wait_for(
            lambda: deployment.replication(master).get("master_link_status") == "up",
            15,
            message="the old master to sync from the new one",
        )
        rejoined = deployment.client(master, "app")
        try:
            assert rejoined.get(f"{PREFIX}failover:probe") == str(attempts).encode()
        finally:
            rejoined.close()
    finally:
        client.close()
        for node in sentinel.sentinels:
            node.close()
    assert promoted[0] == HOST
