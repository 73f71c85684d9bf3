"""A throwaway Redis Cluster for a benchmark: three masters (no replicas) on loopback ports.

Each node is a ``redis-server`` with ``cluster-enabled yes`` in a directory of its own, joined
with ``redis-cli --cluster create``; :meth:`Cluster.close` stops the processes it started (by
their own handles) and removes the directories.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import redis

from bench._http import HOST


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is free too and below 65,536."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 45_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((HOST, candidate))
        except OSError:
            continue
        return port


@dataclass
class Cluster:
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[BinaryIO] = field(default_factory=list)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-cl-")))

    @property
    def nodes(self) -> str:
        """REDIS_CLUSTER_NODES for these nodes."""
        return ",".join(f"{HOST}:{port}" for port in self.ports)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return found


def start(masters: int = 3, timeout: float = 30.0) -> Cluster:
    """``masters`` nodes joined into a cluster whose every slot is served."""
    cluster = Cluster()
    try:
        for _ in range(masters):
            port = _free_cluster_port()
            home = cluster.directory / str(port)
            home.mkdir()
            cluster.ports.append(port)
            cluster.logs.append(log := (home / "log").open("wb"))
            cluster.processes.append(
                subprocess.Popen(
                    [
                        _binary("redis-server"),
                        *("--port", str(port), "--bind", HOST, "--dir", str(home)),
                        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                        *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + timeout
        for port in cluster.ports:
            while True:
                try:
                    redis.Redis(host=HOST, port=port).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        subprocess.run(
            [
                _binary("redis-cli"),
                *("--cluster", "create", *(f"{HOST}:{p}" for p in cluster.ports)),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=timeout,
        )
        while not all(_ready(port, masters) for port in cluster.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's cluster did not become ready")
            time.sleep(0.1)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _ready(port: int, masters: int) -> bool:
    client = redis.Redis(host=HOST, port=port, decode_responses=True)
    try:
        info: Any = client.cluster("INFO")
    finally:
        client.close()
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line)
    return bool(
        info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == masters
    )
