"""The application on a Sentinel deployment, configured as docker-compose.yml configures it.

A master, a replica and three Sentinels from the rendered deploy/redis configs
(tests/deploy/conftest.py), the API as a real ``python -m api_stub`` (uvicorn) process logged
in as the ACL user ``app``, and a real ``celery worker`` logged in as ``worker``, both finding
the master through the Sentinels: REDIS_SENTINELS, REDIS_SENTINEL_MASTER,
REDIS_SENTINEL_PASSWORD, and sentinel:// broker and result URLs, one chunk per Sentinel, as in
the x-app-env block of docker-compose.yml. Processes run in directories outside the
repository (no .env is read) and are stopped by their process id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from config import Settings, load_settings
from tests.deploy.conftest import MASTER_NAME, PREFIX, Deployment, command
from tests.support.redis_procs import RedisProcess, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
API_START_TIMEOUT = 30.0
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
        **extra,
    }


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a process started with ``env`` builds (no .env file)."""
    return load_settings(**{name.lower(): value for name, value in env.items()}, _env_file=None)


@dataclass
class ApiProcess:
    """``python -m api_stub --port P`` in its own process group, its output in a log file."""

    env: dict[str, str]
    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "api.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> ApiProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api_stub", "--port", str(self.port)],
                cwd=self.directory,  # no .env of the working tree: the environment is all
                env=os.environ | self.env | {"PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + API_START_TIMEOUT
        while True:
            try:
                httpx.get(f"{self.base_url}/api/v1/lookups/tiers", timeout=1.0)
                return self
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the API exited:\n{self.log()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL of its group if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)
