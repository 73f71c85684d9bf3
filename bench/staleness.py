"""How long a client-side cache serves a replaced value: this project's near tier and cashews'.

    python -m bench.staleness [--writes 10000] [--readers 4] [--keys 100] [--json]

One process writes ``--writes`` versions round-robin over ``--keys`` keys, as fast as it can,
noting when each write was acknowledged; ``--readers`` other processes read the same keys in
a loop through their own client-side cache. For each write and each reader, the staleness is
how long after the acknowledgement that reader still *started* a read that answered an older
version (0 when none did); a write's staleness is the worst reader's. Times are
CLOCK_MONOTONIC, one clock for every process of the machine.

Contenders, one after the other (each with its own keys in database 14):

- ``project``: ``CacheService.get`` through ``Services`` (near tier, tracking connection);
  writes with ``write_through``;
- ``cashews_client_side``: cashews ``client_side=True`` (BCAST, a pub/sub listener task);
- redis-py's client-side cache needs Redis >= 7.4 and is reported as not measured below it.

Targets (the project): p99 <= 5 ms, max <= 50 ms.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import redis

from bench import _near
from bench._common import BENCH_DB, clear_prefix

TARGET_P99_MS: Final = 5.0
TARGET_MAX_MS: Final = 50.0
TAIL: Final = 0.3  # seconds the readers go on after the last write


# --- the clients of each contender ------------------------------------------------------------
class _Project:
    def __init__(self, prefix: str) -> None:
        from config import load_settings
        from services import Services

        settings = load_settings(
            redis_host="127.0.0.1", redis_port=6379, redis_db=BENCH_DB, redis_key_prefix=prefix
        )
        self.services = Services.open(settings, near=True)
        tracker = self.services.tracker
        if tracker is None or not tracker.wait_connected(5):
            raise RuntimeError("the near tier's tracking did not come up")
        self.keys = self.services.keys

    def key(self, n: int) -> str:
        return self.keys.member(n)

    def read(self, key: str) -> int:
        from cache import DataType

        value = self.services.cache.get(key, DataType.MEMBER)
        return int(value["v"]) if isinstance(value, dict) else -1

    def write(self, key: str, version: int) -> None:
        from cache import DataType

        if not self.services.cache.write_through(key, {"v": version}, version, DataType.MEMBER):
            raise RuntimeError("write_through refused")

    def close(self) -> None:
        self.services.close()


class _Cashews:
    def __init__(self, prefix: str) -> None:
        url = f"redis://127.0.0.1:6379/{BENCH_DB}"
        self.cs = _near.CashewsClientSide(url, prefix)

    def key(self, n: int) -> str:
        return f"member:{n}"

    def read(self, key: str) -> int:
        # A turn of the loop first, as a server's loop gives between requests: cashews reads
        # its invalidations in a listener task of that loop, which a local hit never awaits.
        value = self.cs.get(key, yield_first=True)
        return int(value["v"]) if isinstance(value, dict) else -1

    def write(self, key: str, version: int) -> None:
        self.cs.set(key, {"v": version}, 600)

    def close(self) -> None:
        self.cs.close()


class Client(Protocol):
    def key(self, n: int) -> str: ...
    def read(self, key: str) -> int: ...
    def write(self, key: str, version: int) -> None: ...
    def close(self) -> None: ...


CLIENTS: Final[dict[str, Callable[[str], Client]]] = {
    "project": _Project,
    "cashews_client_side": _Cashews,
}


# --- processes ----------------------------------------------------------------------------------
def _reader(name: str, prefix: str, keys: int, stop: Any, ready: Any, out: Any) -> None:
    client = CLIENTS[name](prefix)
    try:
        names = [client.key(n) for n in range(keys)]
        seen = [client.read(key) for key in names]
        ready.release()
        # (key index, new version, start of the last read that answered the older one)
        changes: list[tuple[int, int, float]] = []
        last_start = [0.0] * keys
        reads, n = 0, 0
        while not stop.value:
            index = n % keys
            n += 1
            started = time.monotonic()
            version = client.read(names[index])
            reads += 1
            if version > seen[index]:
                changes.append((index, version, last_start[index]))
                seen[index] = version
            last_start[index] = started
        out.put({"reads": reads, "changes": changes})
    finally:
        client.close()


def measure(name: str, writes: int, readers: int, keys: int) -> dict[str, Any]:
    prefix = f"bench:staleness:{secrets.token_hex(4)}:"
    spawn = multiprocessing.get_context("spawn")
    stop, ready, out = spawn.RawValue(ctypes.c_int, 0), spawn.Semaphore(0), spawn.Queue()
    writer = CLIENTS[name](prefix)
    names = [writer.key(n) for n in range(keys)]
    try:
        for key in names:
            writer.write(key, 0)
        procs = [
            spawn.Process(target=_reader, args=(name, prefix, keys, stop, ready, out), daemon=True)
            for _ in range(readers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError(f"{name}: a reader did not start")
        time.sleep(0.3)
        acked: list[tuple[int, int, float]] = []
        for version in range(1, writes + 1):
            index = version % keys
            writer.write(names[index], version)
            acked.append((index, version, time.monotonic()))
        time.sleep(TAIL)
        stop.value = 1
        results = [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=10)
    finally:
        writer.close()
        clear_prefix(prefix)
    return _figures(acked, results, keys)


def _figures(
    acked: list[tuple[int, int, float]], results: list[dict[str, Any]], keys: int
) -> dict[str, Any]:
    """Per write: the worst reader's last old read started after the acknowledgement."""
    worst: list[float] = []
    per_reader = []
    for result in results:
        # For each key, the changes this reader saw, in version order.
        by_key: dict[int, list[tuple[int, float]]] = {}
        for index, version, last_old in result["changes"]:
            by_key.setdefault(index, []).append((version, last_old))
        per_reader.append(by_key)
    for index, version, at in acked:
        late = 0.0
        for by_key in per_reader:
            # The first change to this version or newer: the read before it was the last old.
            for seen_version, last_old in by_key.get(index, []):
                if seen_version >= version:
                    late = max(late, last_old - at)
                    break
            else:
                late = float("inf")  # this reader never saw it
        worst.append(max(late, 0.0) * 1000)
    worst.sort()
    finite = [value for value in worst if value != float("inf")]
    stale_writes = sum(1 for value in worst if value > 0)
    return {
        "writes": len(acked),
        "reads": sum(result["reads"] for result in results),
        "keys": keys,
        "writes_with_a_stale_read_after_ack": stale_writes,
        "never_seen": len(worst) - len(finite),
        "p50_ms": round(statistics.median(worst), 3) if worst else None,
        "p99_ms": round(worst[int(len(worst) * 0.99) - 1], 3) if worst else None,
        "max_ms": round(worst[-1], 3) if worst else None,
    }


def run(writes: int, readers: int, keys: int) -> dict[str, Any]:
    server = redis.Redis(host="127.0.0.1", port=6379, db=BENCH_DB)
    try:
        version = str(server.info("server").get("redis_version", "0"))
    finally:
        server.close()
    report: dict[str, Any] = {
        "benchmark": "bench.staleness",
        "config": {"writes": writes, "readers": readers, "keys": keys, "redis": version},
        "results": {},
        "unavailable": {},
    }
    for name in CLIENTS:
        report["results"][name] = measure(name, writes, readers, keys)
    if not _near.redispy_csc_supported(version):
        report["unavailable"]["redispy_client_side"] = (
            f"redis-py's client-side cache needs Redis >= 7.4; the server is {version}"
        )
    project = report["results"]["project"]
    report["verdict"] = {
        "p99_ms": project["p99_ms"],
        "p99_target_ms": TARGET_P99_MS,
        "max_ms": project["max_ms"],
        "max_target_ms": TARGET_MAX_MS,
        "ok": project["p99_ms"] <= TARGET_P99_MS and project["max_ms"] <= TARGET_MAX_MS,
    }
    return report


def render(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"bench.staleness: {cfg['writes']:,} writes by one process over {cfg['keys']} keys, "
        f"{cfg['readers']} reader processes, Redis {cfg['redis']}; staleness = last read "
        "started after the ack that answered the old version (worst reader)"
    ]
    for name, row in report["results"].items():
        lines.append(
            f"  {name:<22} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  "
            f"max {row['max_ms']:.3f} ms  writes with a stale read after the ack "
            f"{row['writes_with_a_stale_read_after_ack']:,}/{row['writes']:,}  "
            f"reads {row['reads']:,}"
        )
    for name, why in report["unavailable"].items():
        lines.append(f"  not measured: {name}: {why}")
    v = report["verdict"]
    lines.append(
        f"project: p99 {v['p99_ms']:.3f} ms (target <= {v['p99_target_ms']:g}), max "
        f"{v['max_ms']:.3f} ms (target <= {v['max_target_ms']:g})" + ("" if v["ok"] else "  MISSED")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.staleness", description=__doc__)
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    ns = parser.parse_args(argv)
    report = run(ns.writes, ns.readers, ns.keys)
    print(json.dumps(report) if ns.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
