"""A private Sentinel deployment for bench.replay: a master, a replica and three Sentinels.

The shape of docker-compose.yml (quorum 2) on loopback ports of its own, without passwords
(nothing else can reach them) and without persistence. ``kill_master`` SIGKILLs whichever
node is the master now; the Sentinels promote the replica; ``rejoin`` starts the killed node
again as a replica of the new master, so a second pass finds a master with a replica again.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from tasks.jobs.loaded_copy import redis_server_binary

MASTER_NAME: Final = "mymaster"
QUORUM: Final = 2
READY_TIMEOUT: Final = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Node:
    name: str
    port: int
    directory: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.directory / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)

    def answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class SentinelGroup:
    directory: Path
    down_after_ms: int
    data: list[Node] = field(default_factory=list)  # the master first, then the replica
    sentinels: list[Node] = field(default_factory=list)

    @property
    def hosts(self) -> str:
        """REDIS_SENTINELS of the processes."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    def start(self) -> SentinelGroup:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("bench.replay needs the redis-server binary")
        for index, name in enumerate(("redis-a", "redis-b")):
            port = free_port()
            directory = self.directory / name
            directory.mkdir(parents=True)
            argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
            argv += ["--save", "", "--appendonly", "no"]
            if index:
                argv += ["--replicaof", "127.0.0.1", str(self.data[0].port)]
            self.data.append(Node(name, port, directory, argv))
            self.data[-1].start()
        self._wait(lambda: all(node.answers() for node in self.data), "the data nodes")
        for index in range(3):
            port = free_port()
            directory = self.directory / f"sentinel-{index}"
            directory.mkdir(parents=True)
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.data[0].port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            node = Node(f"sentinel-{index}", port, directory, [binary, str(conf), "--sentinel"])
            self.sentinels.append(node)
            node.start()
        self.wait_healthy()
        return self

    def _wait(self, ready: object, what: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"bench.replay: {what} not ready after {timeout:.0f} s")

    def _sentinel_view(self, node: Node) -> dict[str, object]:
        client = node.client()
        try:
            state = client.sentinel_master(MASTER_NAME)
            return dict(state) if isinstance(state, dict) else {}
        finally:
            client.close()

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        """Every Sentinel knows the other two and one replica of the master."""

        def healthy() -> bool:
            try:
                views = [self._sentinel_view(node) for node in self.sentinels]
            except redis.RedisError:
                return False
            return (
                all(view["num-other-sentinels"] == 2 and view["num-slaves"] == 1 for view in views)
                and self.master_node().answers()
            )

        self._wait(healthy, "the Sentinels", timeout)
        master = self.master_node().client()
        try:  # and the replica is in sync: a kill now loses at most the last writes
            self._wait(
                lambda: int(master.info("replication").get("connected_slaves", 0)) == 1,
                "the replica",
                timeout,
            )
        finally:
            master.close()

    def master_port(self) -> int | None:
        for node in self.sentinels:
            client = node.client()
            try:
                found = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if isinstance(found, tuple | list) and found:
                return int(found[1])
        return None

    def master_node(self) -> Node:
        port = self.master_port()
        return next(node for node in self.data if node.port == port)

    def kill_master(self) -> Node:
        node = self.master_node()
        if node.proc is not None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(5)
        return node

    def rejoin(self, node: Node) -> None:
        """Start a killed node again as a replica of the current master, as an operator
        restarts one. The Sentinels would convert it from master to replica on their own, but
        not while in TILT mode, which a Sentinel starved of CPU for 2 s enters for 30 s at a
        time: on a loaded machine the node stayed a lone master for over 60 s."""
        master = self.master_port()
        if master is None:
            raise RuntimeError("bench.replay: no master to rejoin")
        argv = list(node.argv)
        if "--replicaof" in argv:
            at = argv.index("--replicaof")
            del argv[at : at + 3]
        node.argv = [*argv, "--replicaof", "127.0.0.1", str(master)]
        node.start()

    def wait_resynced(self, node: Node, timeout: float = 60.0) -> None:
        """Until every data node holds the master's data again, ``node`` (rejoined) among
        them: one master, and each other node its replica with the link up and no full sync
        (the master's fork, the transfer, the load) under way. Not ``node`` alone: on a
        loaded machine the Sentinels may fail over once more (the smoke test's down-after is
        1 s) and make the rejoined node the master, which the other node then syncs from."""

        def replication(data: Node) -> dict[str, Any] | None:
            client = data.client()
            try:
                return dict(client.info("replication"))
            except redis.RedisError:
                return None
            finally:
                client.close()

        def resynced() -> bool:
            found = [replication(data) for data in self.data]
            if node not in self.data or any(info is None for info in found):
                return False
            roles = [info.get("role") for info in found if info is not None]
            return roles.count("master") == 1 and all(
                info.get("master_link_status") == "up"
                and int(info.get("master_sync_in_progress", 1)) == 0
                for info in found
                if info is not None and info.get("role") == "slave"
            )

        self._wait(resynced, "the rejoined replica's sync", timeout)

    def wait_promoted(self, old_port: int, timeout: float = 60.0) -> float:
        """Seconds until the Sentinels name another master than ``old_port``."""
        started = time.monotonic()
        self._wait(lambda: self.master_port() not in (None, old_port), "the failover", timeout)
        return time.monotonic() - started

    def flush(self) -> None:
        """Empty the master (between passes; this deployment is the run's own)."""
        client = self.master_node().client()
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            with contextlib.suppress(OSError):
                node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
