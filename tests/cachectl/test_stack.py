"""``cachectl up`` runs the whole stack and stops it cleanly; ``cachectl warmup`` follows a
warm-up to its end. On an embedded redis-server and a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cachectl.stack import has_api
from tests.support.redis_procs import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (everything cachectl started)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return [pid for pid in found if pid != os.getpid()]


def _nice(pid: int) -> int | None:
    try:
        return int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[16])
    except OSError:
        return None  # gone meanwhile


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def test_up_serves_everything_and_ctrl_c_stops_it_all(tmp_path: Path, empty_database: str) -> None:
    marker = f"MC_UP_TEST_{uuid.uuid4().hex}"
    api_port, flower_port, dead_port = free_port(), free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "COLUMNS": "200",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(dead_port),  # nothing there: cachectl starts an embedded Redis
        "DATABASE_URL": empty_database,
        "API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
        marker: "1",
    }
    out = tmp_path / "up.out"
    with out.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "cachectl.main", "up", "--workdir", "var", "--members", "300"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "press Ctrl-C to stop" not in out.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, out.read_text()
            time.sleep(0.25)
        printed = out.read_text()
        assert "press Ctrl-C to stop" in printed, printed
        redis_port = re.search(r"ready: Redis 127\.0\.0\.1:(\d+)", printed)
        password = re.search(r"login admin / (\S+) \(generated\)", printed)
        assert redis_port and password, printed
        assert f"http://127.0.0.1:{flower_port}" in printed
        auth = ("admin", password[1])
        workers = httpx.get(f"http://127.0.0.1:{flower_port}/api/workers", auth=auth, timeout=10)
        assert workers.status_code == 200
        if has_api():
            assert f"http://127.0.0.1:{api_port}/docs" in printed
            tiers = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/lookups/tiers", timeout=10)
            assert tiers.status_code == 200 and tiers.json()

        warm = subprocess.run(
            [sys.executable, "-m", "cachectl.main", "warmup", "critical", "--timeout", "60"],
            cwd=tmp_path,
            env={**env, "REDIS_PORT": redis_port[1]},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert warm.returncode == 0, warm.stdout + warm.stderr
        assert re.search(r"done: [1-9][\d,]* keys written", warm.stdout), warm.stdout
        children = _processes_with(marker)
        assert len(children) >= 5  # cachectl, redis, worker (+ its pool), beat, flower, api
        # The worker and its pool yield the CPU to the API (WORKER_NICE, 10 by default).
        niceness = {pid: _nice(pid) for pid in children}
        workers = [pid for pid in children if b" worker " in _cmdline(pid)]
        assert workers and all(niceness[pid] == 10 for pid in workers), niceness
        assert {niceness[pid] for pid in children if pid not in workers} == {0}, niceness

        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, out.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    printed = out.read_text()
    assert "stopping ..." in printed and printed.rstrip().endswith("stopped")
    time.sleep(0.5)
    assert _processes_with(marker) == [], "processes outlived cachectl up"
    for port in (api_port, flower_port, int(redis_port[1])):  # nothing listens any more
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, port
