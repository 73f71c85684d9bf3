"""Real redis-server and Sentinel processes started from the rendered deploy/redis configs.

The configs are rendered by deploy/render.py exactly as in production, with the values a test
machine needs: the master's address (127.0.0.1 and a free port, never 6379), a data directory
that exists, a small maxmemory where a test fills memory, and the directory of the TLS
certificates, which scripts/deploy-redis-production.sh makes once per session (its own openssl
step). tests/support/redis_procs.py then appends only its listen overrides (bind, the TLS port,
dir, logfile) and what a test names explicitly. Every server and Sentinel speaks TLS only.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from deploy.render import render_dir
from tests.support import redis_procs
from tests.support.redis_procs import HOST, RedisProcess, TlsFiles, start_redis, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_SCRIPT = ROOT / "scripts" / "deploy-redis-production.sh"
MASTER_NAME = "mymaster"
PREFIX = "membership:"
SHARED_REDIS_PORT = 6379

# The names scripts/deploy-redis-production.sh generates; the templates need no others.
SECRET_NAMES = (
    "REDIS_ADMIN_PASSWORD",
    "REDIS_APP_PASSWORD",
    "REDIS_WORKER_PASSWORD",
    "REDIS_REPLICATION_PASSWORD",
    "REDIS_SENTINEL_AUTH_PASSWORD",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_HEALTHCHECK_PASSWORD",
    "POSTGRES_PASSWORD",
    "REDIS_COMMANDER_PASSWORD",
    "FLOWER_PASSWORD",
    "RABBITMQ_PASSWORD",
)
USER_SECRETS = {
    "admin": "REDIS_ADMIN_PASSWORD",
    "app": "REDIS_APP_PASSWORD",
    "worker": "REDIS_WORKER_PASSWORD",
    "replication": "REDIS_REPLICATION_PASSWORD",
    "sentinel": "REDIS_SENTINEL_AUTH_PASSWORD",
    "healthcheck": "REDIS_HEALTHCHECK_PASSWORD",
}
# A master started alone must accept writes; the failover tests keep the rendered value.
STANDALONE = {"min-replicas-to-write": "0"}


def generate_secrets() -> dict[str, str]:
    return {name: secrets.token_hex(32) for name in SECRET_NAMES}


def run_deploy_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/deploy-redis-production.sh with none of the stack's settings inherited."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in SECRET_NAMES and not key.startswith(("REDIS_", "DEPLOY_"))
    }
    return subprocess.run(
        ["bash", str(DEPLOY_SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**clean, "PYTHON": sys.executable, **env},
        cwd=ROOT,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="session")
def deploy_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """The CA and certificates of the deploy script's TLS step, made once per session."""
    out = tmp_path_factory.mktemp("deploy-tls")
    result = run_deploy_script("--render-only", str(out))
    assert result.returncode == 0, result.stderr
    return TlsFiles.under(out / "tls")


@dataclass
class Deployment:
    """One rendering of deploy/redis/ into ``directory`` and the secrets it was made from."""

    directory: Path
    env: dict[str, str]
    tls: TlsFiles
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def master_conf(self) -> Path:
        return self.directory / "redis-master.conf"

    @property
    def replica_conf(self) -> Path:
        return self.directory / "redis-replica.conf"

    @property
    def sentinel_conf(self) -> Path:
        return self.directory / "sentinel.conf"

    @property
    def acl_file(self) -> Path:
        return self.directory / "users.acl"

    def password(self, user: str) -> str:
        return self.env[USER_SECRETS[user]]

    def render(self, master_port: int, **overrides: str) -> None:
        """Render again, now pointing the replica and the Sentinels at ``master_port``."""
        if master_port == SHARED_REDIS_PORT:
            raise ValueError("the rendered configs must never point at the shared Redis")
        values = {
            **self.env,
            "REDIS_DATA_DIR": str(self.directory),
            "REDIS_MASTER_HOST": HOST,
            "REDIS_MASTER_PORT": str(master_port),
            "REDIS_TLS_DIR": str(self.tls.ca_cert.parent),
            **overrides,
        }
        render_dir(self.directory, values)

    def start_master(self, extra: Mapping[str, str] | None = None) -> RedisProcess:
        return start_redis(
            config_file=self.master_conf, extra=extra, tls=self.tls, tls_in_config=True
        )

    def start_replica(self, master: RedisProcess) -> RedisProcess:
        self.render(master.port, **self.overrides)
        replica = start_redis(config_file=self.replica_conf, tls=self.tls, tls_in_config=True)

        def linked() -> bool:
            return self.replication(replica).get("master_link_status") == "up"

        try:
            wait_for(linked, 15, message="replica link to the master")
        except BaseException:
            replica.close()
            raise
        return replica

    def start_sentinel(self, master: RedisProcess) -> RedisProcess:
        """One Sentinel from the rendered sentinel.conf (each gets its own writable copy)."""
        self.render(master.port, **self.overrides)
        text = self.sentinel_conf.read_text()

        def render(port: int, directory: Path) -> str:
            listen = redis_procs._listen_directives(port, directory, self.tls, certificates=False)
            return f"{text}# ---- listen overrides of the test\n{redis_procs._render(listen)}"

        return redis_procs._launch(
            port=None,
            render=render,
            sentinel=True,
            password=self.env["REDIS_SENTINEL_PASSWORD"],
            tls=self.tls,
        )

    def tls_settings(self) -> dict[str, str]:
        """``tls_env`` as keyword arguments of load_settings."""
        return {name.lower(): value for name, value in self.tls_env().items()}

    def tls_env(self) -> dict[str, str]:
        """The REDIS_TLS_* settings docker-compose.yml gives the application processes."""
        return {
            "REDIS_TLS": "true",
            "REDIS_TLS_CA_FILE": str(self.tls.ca_cert),
            "REDIS_TLS_CERT_FILE": str(self.tls.client_cert),
            "REDIS_TLS_KEY_FILE": str(self.tls.client_key),
        }

    def replication(self, proc: RedisProcess) -> dict[str, Any]:
        """INFO replication of ``proc``, read as the healthcheck user (as the containers do)."""
        return info(self.client(proc, "healthcheck"), "replication")

    def client(self, proc: RedisProcess, user: str = "admin", **kwargs: Any) -> redis.Redis:
        """A client of ``proc`` logged in as one of the ACL users; the caller closes it."""
        return proc.client(username=user, password=self.password(user), **kwargs)


def info(client: redis.Redis, section: str) -> dict[str, Any]:
    """INFO ``section`` through ``client``, which is closed afterwards."""
    try:
        result = client.info(section)
    finally:
        client.close()
    assert isinstance(result, dict)
    return result


def command(client: redis.Redis, *args: object) -> Any:
    """``execute_command`` with a typed signature (redis-py leaves it untyped)."""
    execute: Callable[..., Any] = client.execute_command
    return execute(*args)


@pytest.fixture
def make_deployment(tmp_path: Path, deploy_tls: TlsFiles) -> Callable[..., Deployment]:
    """Render the templates into a fresh directory; keyword arguments override values."""
    count = 0

    def make(**overrides: str) -> Deployment:
        nonlocal count
        count += 1
        directory = tmp_path / f"deploy-{count}"
        deployment = Deployment(directory, generate_secrets(), deploy_tls, overrides)
        # The master needs no master address; a placeholder port until the master has one.
        deployment.render(1, **overrides)
        return deployment

    return make


@pytest.fixture
def deployment(make_deployment: Callable[..., Deployment]) -> Deployment:
    return make_deployment()


@pytest.fixture
def master(deployment: Deployment) -> Iterator[RedisProcess]:
    """A master from the rendered config, accepting writes without a replica."""
    with deployment.start_master(extra=STANDALONE) as proc:
        yield proc
