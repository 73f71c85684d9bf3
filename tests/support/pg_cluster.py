"""A throwaway PostgreSQL 15 cluster with password authentication, for tests that need one.

The machine's main cluster trusts every local connection, so a password cannot be tested
there. This one (pg_createcluster, as Debian's postgresql-common makes them) asks for
SCRAM-SHA-256 over TCP on 127.0.0.1 and trusts its Unix socket, the administrator's way in.
It is dropped (stopped first) however the test ends.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.redis_procs import free_port

VERSION = "15"
SOCKET_DIR = "/var/run/postgresql"


@dataclass(frozen=True)
class PgCluster:
    name: str
    port: int

    @property
    def admin_url(self) -> str:
        """The superuser over the Unix socket (trusted)."""
        return f"postgresql://postgres@/postgres?host={SOCKET_DIR}&port={self.port}"

    def url(self, user: str, password: str, database: str) -> str:
        """``user`` over TCP with its password (SCRAM-SHA-256)."""
        return f"postgresql+psycopg://{user}:{password}@127.0.0.1:{self.port}/{database}"


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")


@contextmanager
def password_cluster(label: str = "rot") -> Iterator[PgCluster]:
    cluster = PgCluster(f"{label}{os.getpid()}", free_port())
    _run(
        "pg_createcluster", VERSION, cluster.name, "-p", str(cluster.port), "--",
        "--auth-local=trust", "--auth-host=scram-sha-256",
    )  # fmt: skip
    try:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", VERSION, cluster.name, "start")
        yield cluster
    finally:
        _run("pg_dropcluster", "--stop", VERSION, cluster.name)
