"""Redis connections from Settings: standalone, Sentinel or Cluster; pooled; TLS; timeouts.

One Redis role at a time (config/redis_role.py): ``connect(settings)`` is the cache role's,
``connect(settings, "durable")`` the durable role's; timeouts and pool sizes are the
process's, the same for both.

Each mode gives a writer (the master) and a reader (a replica when reads from replicas are
allowed, else the writer). redis-py does the work: Sentinel's connection pool rediscovers the
master after a failover, RedisCluster follows slot moves. Retries are limited to one
immediate retry (a pooled connection can die with a restart); anything slower is the
circuit breaker's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, LoadBalancingStrategy, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from config import Settings
from config.redis_role import RedisRole, RoleName

Mode = Literal["standalone", "sentinel", "cluster"]
SyncRedis = redis.Redis | RedisCluster
AsyncRedis = aioredis.Redis | AsyncRedisCluster


@dataclass
class SyncClients:
    mode: Mode
    writer: SyncRedis
    reader: SyncRedis
    sentinel: Sentinel | None = None

    def close(self) -> None:
        for client in {id(self.writer): self.writer, id(self.reader): self.reader}.values():
            client.close()
        if self.sentinel is not None:
            for sentinel in self.sentinel.sentinels:
                sentinel.close()


@dataclass
class AsyncClients:
    mode: Mode
    writer: AsyncRedis
    reader: AsyncRedis
    sentinel: AsyncSentinel | None = None

    async def close(self) -> None:
        for client in {id(self.writer): self.writer, id(self.reader): self.reader}.values():
            await client.aclose()
        if self.sentinel is not None:
            for sentinel in self.sentinel.sentinels:
                await sentinel.aclose()


def _common(settings: Settings, role: RedisRole, *, asyncio: bool) -> dict[str, Any]:
    password = role.password.get_secret_value() or None
    return {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "retry": (AsyncRetry if asyncio else Retry)(NoBackoff(), 1),
        "username": role.username,
        "password": password,
        "client_name": "membership-cache",
        "decode_responses": False,
    }


def _cluster_reads(role: RedisRole) -> LoadBalancingStrategy | None:
    return LoadBalancingStrategy.ROUND_ROBIN if role.read_from_replica else None


def _pool_wait(settings: Settings) -> float:
    # Callers beyond max_connections queue for a connection instead of failing: a burst of
    # callers is not a Redis outage. Past this wait it is treated as one.
    return max(1.0, settings.redis_socket_timeout * 4)


def _sentinel_kwargs(settings: Settings, role: RedisRole) -> dict[str, Any]:
    # The Sentinels of a TLS deployment speak TLS too, with the same CA (deploy/redis).
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        **role.tls_options.redis_kwargs(),
    }
    if role.sentinel_password.get_secret_value():
        kwargs["password"] = role.sentinel_password.get_secret_value()
        kwargs["username"] = role.sentinel_username
    return kwargs


@dataclass(frozen=True)
class _Flavour:
    """The redis-py classes of one I/O style; connect() is written once over them."""

    cluster: Any
    cluster_node: Any
    sentinel: Any
    pool: Any
    client: Any


class _AsyncBlockingSentinelPool(
    aioredis.sentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool
):
    """The Sentinel pool of the async clients, queuing callers beyond ``max_connections``
    as the standalone pool does. redis-py has no blocking Sentinel pool, and its pools (8.2)
    stop at 100 connections by default and fail the next caller with MaxConnectionsError;
    the breaker counts that as Redis down. Seen in the 1,000,000-member replay: 9 "Too many
    connections" in the API while the new master forked for a resync."""


_SYNC = _Flavour(RedisCluster, ClusterNode, Sentinel, redis.BlockingConnectionPool, redis.Redis)
_ASYNC = _Flavour(
    AsyncRedisCluster,
    AsyncClusterNode,
    AsyncSentinel,
    aioredis.BlockingConnectionPool,
    aioredis.Redis,
)


def _connect(
    settings: Settings, role_name: RoleName, flavour: _Flavour, asyncio: bool
) -> tuple[Mode, Any, Any, Any]:
    """(mode, writer, reader, sentinel) for one role, in the given I/O style."""
    role = settings.redis_role(role_name)
    common = _common(settings, role, asyncio=asyncio) | role.tls_options.redis_kwargs()
    if role.mode == "cluster":
        cluster = flavour.cluster(
            startup_nodes=[flavour.cluster_node(host, port) for host, port in role.cluster_hosts],
            load_balancing_strategy=_cluster_reads(role),
            max_connections=settings.redis_max_connections,
            **common,
        )
        return "cluster", cluster, cluster, None
    if role.mode == "sentinel":
        sentinel = flavour.sentinel(
            role.sentinel_hosts,
            sentinel_kwargs=_sentinel_kwargs(settings, role),
            db=role.db,
            **common,
        )
        name = role.sentinel_master
        # redis-py has no blocking Sentinel pool: the async clients (the API) get ours; the
        # sync ones keep redis-py's, which fails callers beyond 100 connections at once.
        pooled: dict[str, Any] = {}
        if asyncio:
            pooled = {
                "connection_pool_class": _AsyncBlockingSentinelPool,
                "max_connections": settings.redis_max_connections,
                "timeout": _pool_wait(settings),
            }
        master = sentinel.master_for(name, **pooled)
        reader = sentinel.slave_for(name, **pooled) if role.read_from_replica else master
        return "sentinel", master, reader, sentinel
    # rediss:// in the URL selects the TLS connection class; the flag itself is not wanted.
    common.pop("ssl", None)
    pool = flavour.pool.from_url(
        role.url_for(),
        max_connections=settings.redis_max_connections,
        timeout=_pool_wait(settings),
        **common,
    )
    client = flavour.client.from_pool(pool)  # owns the pool: close() disconnects it
    return "standalone", client, client, None


def connect(settings: Settings, role: RoleName = "cache") -> SyncClients:
    """Sync clients of one role (Celery workers, cachectl, tests)."""
    return SyncClients(*_connect(settings, role, _SYNC, asyncio=False))


def connect_async(settings: Settings, role: RoleName = "cache") -> AsyncClients:
    """asyncio clients of one role (the API)."""
    return AsyncClients(*_connect(settings, role, _ASYNC, asyncio=True))
