"""A clear by pattern: what it costs the process that runs it (the API's event loop).

``python -m bench.clear [--keys N] [--rounds R] [--json]``

Each round fills N keys under a prefix of the shared Redis's bench database and deletes them
with each contender in turn, the order rotating from round to round:

- this project: ``api_stub.management.clear``, each step one script inside Redis
  (cache.scripts CLEAR_STEP), 5,000 keys deleted first and spared by the scan;
- the client loop: SCAN 1,000 + UNLINK of what it found, from redis.asyncio (what the
  project's clear did before the script);
- cashews ``delete_match``: SCAN 100 + UNLINK, from its Redis backend.

Reported per contender: the median round's wall time and the CPU time of this process, per
1,000 keys. The CPU time is what an API process spends on its event loop while its other
requests wait; the wall time is mostly Redis's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, Final

import redis
from redis import asyncio as aredis
from rich.console import Console
from rich.table import Table

from api_stub.management.clear import clear
from bench._common import BENCH_DB, clear_prefix
from cache import build_async_cache
from config import load_settings

SPARED: Final = 5_000
VALUE: Final = b"x" * 200


def _fill(client: redis.Redis, prefix: str, keys: int) -> None:
    for start in range(0, keys, 10_000):
        client.mset({f"{prefix}member:{i}": VALUE for i in range(start, min(keys, start + 10_000))})


class _Timer:
    """Wall and CPU time of this process around the deletion only (not set-up)."""

    def __enter__(self) -> _Timer:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


async def _project(prefix: str) -> _Timer:
    settings = load_settings(
        redis_host="127.0.0.1",
        redis_port=6379,
        redis_db=BENCH_DB,
        redis_key_prefix=prefix,
        _env_file=None,
    )
    cache = build_async_cache(settings)
    try:
        first = cache.keys.members(range(SPARED))
        with _Timer() as timer:
            await clear(cache, "member:*", dry_run=False, batch=1000, first=first)
        return timer
    finally:
        await cache.close()


async def _client_loop(prefix: str) -> _Timer:
    client = aredis.Redis(host="127.0.0.1", port=6379, db=BENCH_DB)
    await client.ping()
    cursor = 0
    try:
        with _Timer() as timer:
            while True:
                cursor, keys = await client.scan(cursor, match=f"{prefix}member:*", count=1000)
                if keys:
                    await client.unlink(*keys)
                if cursor == 0:
                    break
        return timer
    finally:
        await client.aclose()


async def _cashews(prefix: str) -> _Timer:
    from cashews import Cache

    cache = Cache()
    cache.setup(f"redis://127.0.0.1:6379/{BENCH_DB}")
    try:
        await cache.ping()
        with _Timer() as timer:
            await cache.delete_match(f"{prefix}member:*")
        return timer
    finally:
        with warnings.catch_warnings():  # cashews closes redis-py's client with close()
            warnings.simplefilter("ignore", DeprecationWarning)
            await cache.close()


CONTENDERS: Final[dict[str, Callable[[str], Coroutine[Any, Any, _Timer]]]] = {
    "this project (script step)": _project,
    "client loop (SCAN 1000 + UNLINK)": _client_loop,
    "cashews delete_match": _cashews,
}


def run(keys: int, rounds: int) -> dict[str, Any]:
    shared = redis.Redis(host="127.0.0.1", port=6379, db=BENCH_DB)
    figures: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in CONTENDERS}
    names = list(CONTENDERS)
    try:
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                prefix = f"bench:clear:{uuid.uuid4().hex[:8]}:"
                _fill(shared, prefix, keys)
                timer: _Timer = asyncio.run(CONTENDERS[name](prefix))
                figures[name]["wall"].append(timer.wall)
                figures[name]["cpu"].append(timer.cpu)
                left = sum(1 for _ in shared.scan_iter(match=f"{prefix}member:*", count=1000))
                clear_prefix(prefix)
                if left:
                    raise RuntimeError(f"{name} left {left} keys")
    finally:
        shared.close()
    per = keys / 1000
    out: dict[str, Any] = {"keys": keys, "rounds": rounds, "contenders": {}}
    mine = statistics.median(figures[names[0]]["cpu"])
    for name in names:
        wall, cpu = (
            statistics.median(figures[name]["wall"]),
            statistics.median(figures[name]["cpu"]),
        )
        out["contenders"][name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "wall_ms_per_1000_keys": round(1000 * wall / per, 3),
            "cpu_ms_per_1000_keys": round(1000 * cpu / per, 3),
            "cpu_ratio_to_project": round(cpu / mine, 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.clear", description=__doc__)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.keys < 2 * SPARED or args.rounds < 1:
        parser.error(f"--keys >= {2 * SPARED}, --rounds >= 1")
    result = run(args.keys, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"clear of {args.keys:,} keys (median of {args.rounds} rounds)")
    for column in ("contender", "wall s", "CPU s", "CPU ms / 1,000 keys", "CPU x project"):
        table.add_column(column, justify="right")
    for name, row in result["contenders"].items():
        table.add_row(
            name,
            f"{row['wall_s']:.3f}",
            f"{row['cpu_s']:.3f}",
            f"{row['cpu_ms_per_1000_keys']:.3f}",
            f"{row['cpu_ratio_to_project']:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
