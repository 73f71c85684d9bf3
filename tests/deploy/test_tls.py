"""TLS end to end on the rendered deployment: servers, replication, Sentinels and clients.

The master, the replica and three Sentinels run from deploy/redis as rendered for production
(tests/deploy/conftest.py), with the CA and certificates made by the deploy script's own
openssl step; only listen addresses and ports differ. Celery over rediss:// to a TLS master is
test_acl.py's probe worker (every queue, results, remote control and events); the API and a
worker through the TLS Sentinels across a failover are test_app_failover.py's.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache import DataType, build_cache
from config import load_settings
from tests.deploy.app_stack import Cluster, sentinel_cluster
from tests.deploy.conftest import MASTER_NAME, PREFIX, Deployment, generate_secrets
from tests.support.redis_procs import HOST, RedisProcess, TlsFiles, make_tls_files, wait_for

pytestmark = pytest.mark.fault

# The platform's client timeouts (0.25 s), a little looser for a loaded test machine.
CLIENT_TIMEOUT = 1.0
FAILOVER_DEADLINE = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, deploy_tls: TlsFiles) -> Iterator[Cluster]:
    """One TLS deployment for the module; the failover test runs last and changes it."""
    deployment = Deployment(tmp_path_factory.mktemp("tls-deploy"), generate_secrets(), deploy_tls)
    deployment.render(1)
    with sentinel_cluster(deployment) as started:
        yield started


def connect(proc: RedisProcess, **kwargs: Any) -> redis.Redis:
    """A bare client of ``proc``: no TLS unless the keyword arguments ask for it, and no
    retries (redis-py's default backs off for seconds before it reports a refusal)."""
    return redis.Redis(
        host=HOST,
        port=proc.port,
        socket_timeout=CLIENT_TIMEOUT,
        socket_connect_timeout=CLIENT_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


def ping_refused(client: redis.Redis) -> str:
    """The error a PING gets; fails the test when the PING is answered."""
    try:
        with pytest.raises(redis.ConnectionError) as refused:
            client.ping()
    finally:
        client.close()
    return str(refused.value)


def test_plain_text_is_refused_and_tls_with_the_ca_is_served(
    cluster: Cluster, tmp_path: Path
) -> None:
    deployment = cluster.deployment
    ca_only = {"ssl": True, "ssl_ca_certs": str(deployment.tls.ca_cert)}
    for proc, user, password in (
        (cluster.master, "app", deployment.password("app")),
        (cluster.replica, "app", deployment.password("app")),
        (cluster.sentinels[0], None, deployment.env["REDIS_SENTINEL_PASSWORD"]),
    ):
        credentials = {"username": user, "password": password}
        # The port speaks TLS only: a plain-text client is cut off before its first reply.
        ping_refused(connect(proc, **credentials))
        # A server whose certificate is not the expected CA's is refused by the client.
        other_ca = make_tls_files(tmp_path / f"other-{proc.port}").ca_cert
        assert "certificate verify failed" in ping_refused(
            connect(proc, **credentials, ssl=True, ssl_ca_certs=str(other_ca))
        )
        # The deployment's CA is enough (no client certificate: tls-auth-clients optional),
        # and the host name is checked against the certificate's SANs (IP:127.0.0.1).
        client = connect(proc, **credentials, **ca_only, ssl_check_hostname=True)
        try:
            assert client.ping()
            cipher = client.connection_pool.get_connection()
            try:
                sock = cipher._sock
                assert isinstance(sock, ssl.SSLSocket)
                assert sock.version() in ("TLSv1.2", "TLSv1.3")
            finally:
                client.connection_pool.release(cipher)
        finally:
            client.close()
    admin = deployment.client(cluster.master)
    try:
        # As rendered: no plain-text port; the listen override only moved the TLS port.
        assert admin.config_get("port") == {"port": "0"}
        assert admin.config_get("tls-port") == {"tls-port": str(cluster.master.port)}
        assert admin.config_get("tls-replication") == {"tls-replication": "yes"}
    finally:
        admin.close()


def test_replication_and_sentinel_links_run_over_tls(cluster: Cluster) -> None:
    """The master has no plain-text port, so every link the replica and the Sentinels keep
    to it is TLS; the replica syncs, and the Sentinels see master, replica and each other."""
    deployment = cluster.deployment
    master_info = deployment.replication(cluster.master)
    assert master_info["role"] == "master"
    assert master_info["connected_slaves"] == 1
    assert master_info["slave0"]["port"] == cluster.replica.port  # announced: its TLS port
    assert deployment.replication(cluster.replica)["master_link_status"] == "up"

    writer = deployment.client(cluster.master, "app")
    reader = deployment.client(cluster.replica, "app")
    try:
        key = f"{PREFIX}tls:replicated"
        assert writer.set(key, b"over tls", ex=60)
        assert writer.wait(1, 2000) == 1
        assert reader.get(key) == b"over tls"
    finally:
        writer.close()
        reader.close()
    for sentinel in cluster.sentinels:
        client = sentinel.client(socket_timeout=CLIENT_TIMEOUT)
        try:
            state = client.sentinel_master(MASTER_NAME)
            replicas = client.sentinel_slaves(MASTER_NAME)
        finally:
            client.close()
        assert (state["ip"], int(state["port"])) == cluster.master.address
        assert state["num-other-sentinels"] == 2
        assert [(r["ip"], r["port"], r["flags"]) for r in replicas] == [
            (HOST, cluster.replica.port, "slave")
        ]


@pytest.mark.slow
def test_the_cache_client_follows_a_tls_failover(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The project's cache client in Sentinel mode with REDIS_TLS_*: the Sentinels and the
    servers all over TLS, before and after the Sentinels promote the replica."""
    deployment = cluster.deployment
    settings = load_settings(
        redis_sentinels=cluster.sentinel_hosts,
        redis_sentinel_master=MASTER_NAME,
        redis_sentinel_password=deployment.env["REDIS_SENTINEL_PASSWORD"],
        redis_username="app",
        redis_password=deployment.password("app"),
        redis_key_prefix=PREFIX,
        redis_socket_timeout=CLIENT_TIMEOUT,
        redis_connect_timeout=CLIENT_TIMEOUT,
        environment="production",
        **deployment.tls_settings(),
        _env_file=None,
    )
    assert settings.redis_mode == "sentinel" and settings.redis_tls_options.enabled
    cache = build_cache(settings)
    try:
        before = cache.keys.member(1)
        assert cache.set(before, {"id": 1, "at": "before"}, DataType.MEMBER)
        assert cache.get(before, DataType.MEMBER) == {"id": 1, "at": "before"}
        replica = deployment.client(cluster.replica, "app")
        try:
            wait_for(lambda: replica.exists(before), 10, message="the replica to copy the write")
        finally:
            replica.close()

        cluster.master.kill()  # SIGKILL: no goodbye to the replica or the Sentinels
        killed_at = time.monotonic()
        after = cache.keys.member(2)
        wait_for(
            lambda: cache.set(after, {"id": 2, "at": "after"}, DataType.MEMBER),
            FAILOVER_DEADLINE,
            0.1,
            message="a cache write through the TLS Sentinels to the promoted replica",
        )
        recovery = time.monotonic() - killed_at
        with capsys.disabled():
            print(f"\nTLS failover: {recovery:.2f} s from SIGKILL to a cache write")

        assert deployment.replication(cluster.replica)["role"] == "master"
        promoted = deployment.client(cluster.replica, "app")
        try:
            assert promoted.exists(after)  # the write landed on the new master
            assert promoted.exists(before)
        finally:
            promoted.close()
        assert cache.get(after, DataType.MEMBER) == {"id": 2, "at": "after"}
        assert cache.get(before, DataType.MEMBER) == {"id": 1, "at": "before"}
    finally:
        cache.close()
