"""Where one Redis role lives: the connection settings of the cache role or the durable role.

The platform talks to two Redis roles (docs/architecture.md): ``cache`` (evictable entries,
no ``min-replicas-to-write``) and ``durable`` (``noeviction``, AOF: write-behind streams,
platform state, the Celery broker and results when the broker is Redis). Both are described
by one model, :class:`RedisRole`: the cache role's from the design's ``REDIS_*`` variables,
the durable role's from ``DURABLE_REDIS_*`` (``DURABLE_REDIS_HOST``, ``DURABLE_REDIS_PORT``,
...). Without any ``DURABLE_REDIS_*`` the durable role is the cache role, so a single-node
install stays one Redis.

Timeouts and pool sizes are not per role: they are how this process treats any Redis.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from config import urls
from config.tls import RedisTls

RoleName = Literal["cache", "durable"]
Mode = Literal["standalone", "sentinel", "cluster"]


def parse_hosts(value: str) -> list[tuple[str, int]]:
    """``"host:port,host:port"`` as pairs (validated by :func:`check_host_list`)."""
    hosts = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, _, port = item.rpartition(":")
        hosts.append((host, int(port)))
    return hosts


def check_host_list(value: str) -> str:
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port[,host:port...], got {item!r}")
    return value


def check_redis_url(value: str | None) -> str | None:
    return urls.check_redis_url(value) if value else value


class RedisRole(BaseModel):
    """The connection of one Redis role. Field ``x`` is read from ``REDIS_X`` for the cache
    role and from ``DURABLE_REDIS_X`` for the durable role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    password: SecretStr = SecretStr("")
    db: int = Field(0, ge=0)
    # A full URL overrides host/port/db/password; rediss:// turns TLS on.
    url: str | None = None
    username: str | None = None  # ACL user; None means the default user
    # Sentinel: "host:port,host:port"; when set, the master is discovered through them.
    sentinels: str = ""
    sentinel_master: str = "mymaster"
    sentinel_password: SecretStr = SecretStr("")
    sentinel_username: str | None = None  # the Sentinels' ACL user (None: default)
    read_from_replica: bool = False  # reads may lag the master by replication delay
    # Cluster: "host:port,host:port" startup nodes (the cache role only: Celery's Redis
    # transport and the write-behind's WAIT need one master).
    cluster_nodes: str = ""
    # TLS of this role's connections; a group of its own so each role carries its own.
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    _hosts = field_validator("sentinels", "cluster_nodes")(check_host_list)
    _url = field_validator("url")(check_redis_url)

    @cached_property
    def sentinel_hosts(self) -> list[tuple[str, int]]:
        return parse_hosts(self.sentinels)

    @cached_property
    def cluster_hosts(self) -> list[tuple[str, int]]:
        return parse_hosts(self.cluster_nodes)

    @property
    def mode(self) -> Mode:
        if self.cluster_hosts:
            return "cluster"
        if self.sentinel_hosts:
            return "sentinel"
        return "standalone"

    @property
    def uses_tls(self) -> bool:
        return self.tls or (self.url or "").startswith("rediss://")

    @cached_property
    def tls_options(self) -> RedisTls:
        """This role's TLS group as one object (config/tls.py), for every connection to it."""
        return RedisTls(
            enabled=self.uses_tls,
            ca_file=self.tls_ca_file or None,
            cert_file=self.tls_cert_file or None,
            key_file=self.tls_key_file or None,
        )

    @property
    def authenticated(self) -> bool:
        return bool(self.password.get_secret_value() or "@" in (self.url or ""))

    def auth(self) -> str:
        """``user:password@`` (quoted) for a URL, or nothing without credentials."""
        password = self.password.get_secret_value()
        if not (password or self.username):
            return ""
        return f"{quote(self.username or '', safe='')}:{quote(password, safe='')}@"

    def url_for(self, db: int | None = None) -> str:
        """The URL of the standalone server, with the password, for one database."""
        if self.url and db is None:
            return self.url
        scheme = "rediss" if self.uses_tls else "redis"
        host, port = self.host, self.port
        if self.url:
            parts = urlsplit(self.url)
            host, port = parts.hostname or host, parts.port or port
        return f"{scheme}://{self.auth()}{host}:{port}/{self.db if db is None else db}"
