"""The run command on a machine with no Redis and no PostgreSQL at the configured places."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cachectl(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachectl.main", *args],
        env={"PATH": os.environ["PATH"], "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_up_falls_back_to_embedded_redis_and_sqlite(tmp_path: Path) -> None:
    port = _dead_port()
    database = tmp_path / "membership.db"
    result = _cachectl(
        "up",
        "--once",
        "--members",
        "300",
        "--workdir",
        str(tmp_path / "var"),
        env={
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(port),
            "DATABASE_URL": f"sqlite:///{database}",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no Redis at 127.0.0.1:{port}; starting an embedded one" in result.stdout
    assert "seeded 300 members" in result.stdout
    assert "ready: Redis 127.0.0.1:" in result.stdout
    assert database.exists()
    # The embedded server was stopped on exit: nothing listens on its port any more.
    embedded_port = int(result.stdout.split("ready: Redis 127.0.0.1:")[1].split(",")[0])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", embedded_port)) != 0


def test_seed_command(tmp_path: Path) -> None:
    database = tmp_path / "seeded.db"
    result = _cachectl(
        "seed", "--members", "250", env={"DATABASE_URL": f"sqlite:///{database}"}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "seeded 250 members" in result.stdout
