"""``cachectl up`` on a machine with no MANAGEMENT_TOKENS: it mints an admin token, keeps it
in var/ (mode 600), prints it once, and the API it starts accepts it; ``cachectl health`` uses
it with no flag; a second ``up`` reuses it and says where it is. The first ``up`` also rides
out a Redis that stops and comes back while the stack is starting.

A real redis-server of the test's own (stopped and restarted by the test) and a throwaway
PostgreSQL database.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.redis_procs import RedisProcess, free_port, start_redis

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
READY = "press Ctrl-C to stop"
TOKEN_LINE = re.compile(r"api token\W+(\S+)\s+\(admin; kept in ([^)\s]+)\)")


class Up:
    """A running ``cachectl up``, its output (stdout and stderr) in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, out: Path) -> None:
        self.out = out
        with out.open("wb") as sink:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cachectl.main",
                    "up",
                    "--members",
                    "200",
                    "--concurrency",
                    "1",
                ],
                cwd=cwd,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def printed(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 150) -> str:
        deadline = time.monotonic() + timeout
        while text not in (printed := self.printed()):
            assert self.proc.poll() is None, f"up exited before {text!r}:\n{printed}"
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{printed}"
            time.sleep(0.2)
        return printed

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextmanager
def running_up(env: dict[str, str], cwd: Path, name: str) -> Iterator[Up]:
    up = Up(env, cwd, cwd / f"{name}.out")
    try:
        yield up
        assert up.stop() == 0, up.printed()
    finally:
        up.kill()


def _cachectl(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachectl.main", command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_rides_out_a_redis_blip_and_serves_its_own_admin_token(
    tmp_path: Path, empty_database: str
) -> None:
    redis: RedisProcess = start_redis()
    api_port, flower_port = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "COLUMNS": "250",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis.port),
        "DATABASE_URL": empty_database,
        "API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
    }
    api = f"http://127.0.0.1:{api_port}"
    token_file = tmp_path / "var" / "management-token"
    try:
        with running_up(env, tmp_path, "first") as up:
            # Redis goes away while the children start; up waits, as once started.
            up.wait_for("; logs in")
            redis.stop()
            up.wait_for("not ready yet")
            redis.restart()
            printed = up.wait_for(READY)
            found = TOKEN_LINE.search(printed)
            assert found, printed
            token = found[1]
            assert found[2] == "var/management-token"
            assert printed.count(token) == 1  # printed once
            assert token_file.read_text().strip() == token
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

            health = f"{api}/api/v1/cache/health"
            assert httpx.get(health, timeout=10).status_code == 401
            answer = httpx.get(health, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert answer.status_code in (200, 503), answer.text  # accepted, whatever health
            assert "checks" in answer.json()

            result = _cachectl("health", env, tmp_path)  # no --token, no CACHECTL_TOKEN
            assert "health:" in result.stdout, result.stdout + result.stderr
            assert result.returncode in (0, 1), result.stderr

        with running_up(env, tmp_path, "second") as up:
            printed = up.wait_for(READY)
            assert token not in printed  # not printed again, nor a new one minted
            assert "api token" in printed and "admin, kept in var/management-token" in printed
            assert token_file.read_text().strip() == token
            metrics = _cachectl("metrics", env, tmp_path)  # the kept token, no flag
            assert metrics.returncode == 0, metrics.stdout + metrics.stderr
    finally:
        redis.close()
