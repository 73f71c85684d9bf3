"""Two Redis roles, each a master, a replica and three Sentinels from its own rendering of
deploy/redis (deploy/render.py ROLES, as scripts/deploy-redis-production.sh renders them):
losing one role's replica stops only what that role guarantees.

The cache role is rendered without min-replicas-to-write, the durable role with noeviction,
AOF and min-replicas-to-write 1. The API process (tests/support/api_process.py) finds each
role through its Sentinels with the production users (``app`` on the cache role, ``worker``
on the durable one, as docker-compose.yml does), and the Celery broker and results are the
durable role's, derived by celeryconfig.py.

- The cache role's replica dies: reads, writes, task enqueueing and write-behind go on.
- The durable role's replica dies: write-behind answers 503 (nothing is acknowledged that a
  failover could lose), and the API's cached reads go on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from api_stub.management import hash_token
from config import Settings
from deploy.render import ROLES
from tests.deploy.app_stack import Cluster, sentinel_cluster, settings_of
from tests.deploy.conftest import MASTER_NAME, PREFIX, Deployment, generate_secrets
from tests.support.api_process import ApiProcess
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import TlsFiles, wait_for
from workers import routing
from workers.client import TaskClient

pytestmark = [pytest.mark.slow, pytest.mark.fault]

MEMBERS = 20
VIEWER_TOKEN = "roles-viewer-token"  # only its hash is configured


@dataclass
class Roles:
    cache: Cluster
    durable: Cluster
    api: ApiProcess
    settings: Settings

    def admin(self, role: Cluster, db: int = 0) -> redis.Redis:
        return role.deployment.client(role.master, "admin", db=db)


def rendered(directory: Path, role: str, secrets: dict[str, str], tls: TlsFiles) -> Deployment:
    """The role's rendering, pointed at loopback (the role's own host and master name are
    compose's; here each role's Sentinels are its own processes under MASTER_NAME)."""
    values = {
        name: value
        for name, value in ROLES[role].items()
        if name not in ("REDIS_MASTER_HOST", "REDIS_SENTINEL_MASTER")
    }
    deployment = Deployment(directory, secrets, tls, values)
    deployment.render(1, **values)
    return deployment


@contextlib.contextmanager
def both_roles(directory: Path, tls: TlsFiles) -> Iterator[tuple[Cluster, Cluster]]:
    secrets = generate_secrets()
    with (
        sentinel_cluster(rendered(directory / "cache", "cache", secrets, tls)) as cache,
        sentinel_cluster(rendered(directory / "durable", "durable", secrets, tls)) as durable,
    ):
        yield cache, durable


def roles_env(cache: Cluster, durable: Cluster, database_url: str) -> dict[str, str]:
    """The API's environment in docker-compose.yml, on these processes."""
    secrets = cache.deployment.env
    durable_tls = {f"DURABLE_{name}": value for name, value in durable.deployment.tls_env().items()}
    return (
        cache.deployment.tls_env()
        | durable_tls
        | {
            "ENVIRONMENT": "production",
            "REDIS_KEY_PREFIX": PREFIX,
            "REDIS_SENTINELS": cache.sentinel_hosts,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_SENTINEL_PASSWORD": secrets["REDIS_SENTINEL_PASSWORD"],
            "REDIS_USERNAME": "app",
            "REDIS_PASSWORD": secrets["REDIS_APP_PASSWORD"],
            "DURABLE_REDIS_SENTINELS": durable.sentinel_hosts,
            "DURABLE_REDIS_SENTINEL_MASTER": MASTER_NAME,
            "DURABLE_REDIS_SENTINEL_PASSWORD": secrets["REDIS_SENTINEL_PASSWORD"],
            "DURABLE_REDIS_USERNAME": "worker",
            "DURABLE_REDIS_PASSWORD": secrets["REDIS_WORKER_PASSWORD"],
            "WRITEBEHIND_REPLICAS": "1",  # an event is acknowledged once a replica holds it
            "DATABASE_URL": database_url,
            "CACHE_AUTOWARM": "false",
            "MANAGEMENT_TOKENS": f"viewer:{hash_token(VIEWER_TOKEN)}:roles-test",
        }
    )


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory, deploy_tls: TlsFiles) -> Iterator[Roles]:
    with (
        both_roles(tmp_path_factory.mktemp("roles"), deploy_tls) as (cache, durable),
        throwaway_database("roles", members=MEMBERS) as database_url,
    ):
        env = roles_env(cache, durable, database_url)
        api = ApiProcess(env, tmp_path_factory.mktemp("api")).start()
        try:
            yield Roles(cache, durable, api, settings_of(env))
        finally:
            api.stop()


def activity(http: httpx.Client, member_id: int) -> int:
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    body = {"kind": "login", "at": at.isoformat(), "times": 1}
    return http.post(f"/api/v1/members/{member_id}/activity", json=body).status_code


def read_twice(http: httpx.Client, member_id: int) -> str:
    """The X-Cache of the second of two reads (the first may fill)."""
    assert http.get(f"/api/v1/members/{member_id}").status_code == 200
    second = http.get(f"/api/v1/members/{member_id}")
    assert second.status_code == 200
    return second.headers["x-cache"]


def durable_check(http: httpx.Client) -> dict[str, object]:
    answer = http.get("/api/v1/cache/health", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
    check: dict[str, object] = answer.json()["checks"]["durable"]
    return check


def broker_holds(roles: Roles, task_id: str) -> bool:
    """The warm-up message is on its queue, in the durable master's broker database."""
    client = roles.admin(roles.durable, db=1)
    try:
        return any(task_id.encode() in raw for raw in client.lrange(routing.Q_WARMUP, 0, -1))
    finally:
        client.close()


def test_losing_the_cache_replica_stops_nothing(roles: Roles) -> None:
    keys_prefix = roles.settings.redis_key_prefix
    roles.cache.replica.kill()
    wait_for(
        lambda: roles.cache.deployment.replication(roles.cache.master)["connected_slaves"] == 0,
        15,
        message="the cache master to see its replica gone",
    )
    with httpx.Client(base_url=roles.api.base_url, timeout=5.0) as http:
        assert read_twice(http, 1) == "HIT"
        # A write: committed, then written through to the cache master, which takes it
        # without a replica (no min-replicas-to-write on the cache role).
        changed = http.patch("/api/v1/members/2", json={"first_name": "Replica-less"})
        assert changed.status_code == 200, changed.text
        answer = http.get("/api/v1/members/2")
        assert answer.json()["first_name"] == "Replica-less"
        cache_master = roles.admin(roles.cache)
        try:
            assert cache_master.exists(f"{keys_prefix}member:2")
            # Nothing durable went to the cache role.
            assert not list(cache_master.scan_iter(match=f"{keys_prefix}sys:{{wb}}:*"))
        finally:
            cache_master.close()
        # Write-behind (durable role, its replica alive) still acknowledges.
        assert activity(http, 3) == 202
    tasks = TaskClient(roles.settings)
    try:
        task_id = tasks.enqueue_warmup("members", [4])
    finally:
        tasks.close()
    assert broker_holds(roles, task_id)


def test_losing_the_durable_replica_stops_write_behind_only(roles: Roles) -> None:
    with httpx.Client(base_url=roles.api.base_url, timeout=5.0) as http:
        assert activity(http, 5) == 202
        assert read_twice(http, 6) == "HIT"
        assert durable_check(http)["ok"] is True and durable_check(http)["replicas"] == 1
        roles.durable.replica.kill()
        # No replica confirms (WAIT), then the replica gate or NOREPLICAS: 503, never 202.
        wait_for(lambda: activity(http, 5) == 503, 20, message="write-behind to answer 503")
        assert activity(http, 5) == 503
        # /health names it: the durable master has no replica left.
        check = wait_for(
            lambda: (found := durable_check(http))["ok"] is False and found,
            15,
            message="the durable check to fail",
        )
        assert (check["role"], check["replicas"]) == ("master", 0), check
        # The cache role is untouched: cached reads are hits, a miss is filled.
        assert read_twice(http, 6) == "HIT"
        assert read_twice(http, 7) == "HIT"
