"""The application on a Sentinel deployment, configured as docker-compose.yml configures it.

A master, a replica and three Sentinels from the rendered deploy/redis configs
(tests/deploy/conftest.py); the environment of the API (ACL user ``app``, started by
tests/support/api_process.py) and of a real ``celery worker`` (ACL user ``worker``), both
finding the master through the Sentinels: REDIS_SENTINELS, REDIS_SENTINEL_MASTER,
REDIS_SENTINEL_PASSWORD, REDIS_TLS_* (every server and Sentinel speaks TLS only), and sentinel://
broker and result URLs, one chunk per Sentinel, as in the x-app-env block of docker-compose.yml.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from config import Settings, load_settings
from tests.deploy.conftest import MASTER_NAME, PREFIX, Deployment, command
from tests.support.redis_procs import RedisProcess, wait_for

BROKER_DB, RESULTS_DB = 1, 2  # celeryconfig.py: cache on 0, broker on 1, results on 2


def sentinel_ready(sentinel: RedisProcess) -> bool:
    """This Sentinel knows the other two and the replica, and could authorize a failover."""
    client = sentinel.client(socket_timeout=1.0)
    try:
        state = client.sentinel_master(MASTER_NAME)
        quorum = command(client, "SENTINEL", "CKQUORUM", MASTER_NAME)  # error unless OK
    finally:
        client.close()
    return bool(
        state["num-other-sentinels"] == 2
        and state["num-slaves"] == 1
        and state["is_master"]
        and quorum.startswith(b"OK")
    )


@dataclass
class Cluster:
    """Master, replica and three Sentinels, started from the rendered configs."""

    deployment: Deployment
    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]

    @property
    def sentinel_hosts(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in (s.address for s in self.sentinels))


@contextlib.contextmanager
def sentinel_cluster(deployment: Deployment) -> Iterator[Cluster]:
    """Master, replica and three Sentinels that know each other: min-replicas-to-write,
    down-after and failover timeouts as rendered for production."""
    started: list[RedisProcess] = []
    try:
        master = deployment.start_master()
        started.append(master)
        replica = deployment.start_replica(master)
        started.append(replica)
        sentinels: list[RedisProcess] = []
        for _ in range(3):
            sentinels.append(deployment.start_sentinel(master))
            started.append(sentinels[-1])
        wait_for(
            lambda: all(sentinel_ready(s) for s in sentinels),
            30,
            0.2,
            message="three Sentinels that know each other and the replica",
        )
        yield Cluster(deployment, master, replica, sentinels)
    finally:
        for proc in reversed(started):
            proc.close()


def app_env(cluster: Cluster, user: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment docker-compose.yml gives the api (user app) or a worker (user worker)."""
    deployment = cluster.deployment
    worker_password = quote(deployment.password("worker"), safe="")

    def sentinel_urls(db: int) -> str:
        return ";".join(
            f"sentinel://worker:{worker_password}@{host}:{port}/{db}"
            for host, port in (s.address for s in cluster.sentinels)
        )

    return {
        "ENVIRONMENT": "production",
        "REDIS_SENTINELS": cluster.sentinel_hosts,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "REDIS_SENTINEL_PASSWORD": deployment.env["REDIS_SENTINEL_PASSWORD"],
        "REDIS_KEY_PREFIX": PREFIX,
        # An activity event is acknowledged once a replica holds it too (WAIT).
        "WRITEBEHIND_REPLICAS": "1",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": sentinel_urls(BROKER_DB),
        "CELERY_RESULT_BACKEND": sentinel_urls(RESULTS_DB),
        "REDIS_USERNAME": user,
        "REDIS_PASSWORD": deployment.password(user),
        **deployment.tls_env(),
        **extra,
    }


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a process started with ``env`` builds (no .env file)."""
    return load_settings(**{name.lower(): value for name, value in env.items()}, _env_file=None)
