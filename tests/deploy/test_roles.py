"""Two Redis roles, each a master, a replica and three Sentinels: losing one role's replica
stops only what that role guarantees.

The cache role runs as production's cache (an LFU eviction policy, no min-replicas-to-write),
the durable role as production's durable Redis (noeviction, AOF, min-replicas-to-write 1);
the API process (tests/support/api_process.py) finds both through their Sentinels, and the
Celery broker and results are the durable role's (celeryconfig.py derives them).

- The cache role's replica dies: reads, writes, task enqueueing and write-behind go on.
- The durable role's replica dies: write-behind answers 503 (nothing is acknowledged that a
  failover could lose), and the API's cached reads go on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from config import Settings, load_settings
from tests.support.api_process import ApiProcess
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import (
    RedisProcess,
    start_redis,
    start_replica,
    start_sentinels,
    wait_for,
)
from workers import routing
from workers.client import TaskClient

pytestmark = [pytest.mark.slow, pytest.mark.fault]

MEMBERS = 20
CACHE_CONF = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lfu"}
DURABLE_CONF = {
    "maxmemory-policy": "noeviction",
    "appendonly": "yes",
    "min-replicas-to-write": "1",
    "min-replicas-max-lag": "2",
}


@dataclass
class Role:
    name: str
    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]

    @property
    def sentinel_hosts(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in (s.address for s in self.sentinels))


@dataclass
class Roles:
    cache: Role
    durable: Role
    api: ApiProcess
    settings: Settings


@contextlib.contextmanager
def role(name: str, conf: dict[str, str]) -> Iterator[Role]:
    with start_redis(extra=conf) as master, start_replica(master) as replica:
        sentinels = start_sentinels(master, master_name=name)
        try:
            yield Role(name, master, replica, sentinels)
        finally:
            for sentinel in sentinels:
                sentinel.close()


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    with (
        role("cache", CACHE_CONF) as cache,
        role("durable", DURABLE_CONF) as durable,
        throwaway_database("roles", members=MEMBERS) as database_url,
    ):
        env = {
            "ENVIRONMENT": "test",
            "REDIS_KEY_PREFIX": f"roles-{uuid.uuid4().hex[:8]}:",
            "REDIS_SENTINELS": cache.sentinel_hosts,
            "REDIS_SENTINEL_MASTER": "cache",
            "DURABLE_REDIS_SENTINELS": durable.sentinel_hosts,
            "DURABLE_REDIS_SENTINEL_MASTER": "durable",
            "WRITEBEHIND_REPLICAS": "1",  # an event is acknowledged once a replica holds it
            "DATABASE_URL": database_url,
            "CACHE_AUTOWARM": "false",
        }
        api = ApiProcess(env, tmp_path_factory.mktemp("api")).start()
        try:
            yield Roles(
                cache,
                durable,
                api,
                load_settings(**{k.lower(): v for k, v in env.items()}, _env_file=None),
            )
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


def broker_holds(roles: Roles, task_id: str) -> bool:
    """The warm-up message is on its queue, in the durable master's broker database."""
    client = roles.durable.master.client(db=1)
    try:
        return any(task_id.encode() in raw for raw in client.lrange(routing.Q_WARMUP, 0, -1))
    finally:
        client.close()


def test_losing_the_cache_replica_stops_nothing(roles: Roles) -> None:
    keys_prefix = roles.settings.redis_key_prefix
    roles.cache.replica.kill()
    wait_for(
        lambda: roles.cache.master.info("replication")["connected_slaves"] == 0,
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
        cache_master = roles.cache.master.client()
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
        roles.durable.replica.kill()
        # No replica confirms (WAIT), then the replica gate or NOREPLICAS: 503, never 202.
        wait_for(lambda: activity(http, 5) == 503, 20, message="write-behind to answer 503")
        assert activity(http, 5) == 503
        # The cache role is untouched: cached reads are hits, a miss is filled.
        assert read_twice(http, 6) == "HIT"
        assert read_twice(http, 7) == "HIT"
