"""Celery tasks end to end: warm-up throughput and invalidation after a bulk import.

    python -m bench.tasks [--json] [--members 1000000] [--naive 2000] [--import-rows 100000]
                          [--concurrency 2] [--broker URL] [--chunk-size N]

One run, on a throwaway stack (bench/_stack.py: its own redis-server, PostgreSQL database and
``celery worker``), prints:

- warm-up: every member (``warmup_data_type("member")``), from the enqueue to SUCCESS in the
  result backend, in keys/s (the database read, the envelopes, the pipelined writes, the
  task), split into chunk tasks (tasks/chunks.py); first with one worker process, then with
  ``--concurrency`` processes (one ``celery worker -c 1`` each), with the CPU time the worker
  processes, the redis-server and the database's backends spent per key in each run (from
  /proc), and what that CPU cost allows on this machine's cores. Measured on both brokers:
  the stack's redis-server and RabbitMQ (a vhost of the run's own on 127.0.0.1:5672, deleted
  after; left out, and said so, when no broker answers there); then, on Redis,
  ``warmup_all``, the same plus the aggregates, whose analytics queries scan the members and
  payments tables;
- naive: one ``warmup_members([id])`` task per member, the way a per-row signal would warm;
  measured on ``--naive`` members (their keys deleted first) and extrapolated to all of
  them, as the report says;
- redis-benchmark: ``SET -P 16`` against another throwaway redis-server in the same run,
  values the size of a member envelope: the server's own pipelined-write ceiling here;
- invalidation: ``--import-rows`` members inserted in one statement, then
  ``on_bulk_operation("import", n)``; seconds from the commit until every affected read is
  fresh (the aggregate entries gone and the API's member generations moved), and the
  verification that the aggregates then read back the new totals.

Targets: warm-up >= 100,000 keys/s, >= 200,000 keys/s with 2 processes and 2 processes
>= 1.6x one; import invalidation < 1 s. Missed targets are reported, not signalled: the exit
status is 0 unless something failed. ``--broker`` names the second broker instead of a vhost
of the run's own (say ``amqp://guest:guest@127.0.0.1:5672/<vhost>``); results stay on the
stack's redis-server. The top-level figures (``warmup_1_process``, ``warmup``, ``verdict``)
are the Redis broker's; ``brokers`` holds each broker's warm-ups and speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import redis
from rich.console import Console
from rich.table import Table

from bench import _pg, _rabbitmq, _stack
from cache import DataType
from cachectl.embedded import start_embedded_redis
from workers import routing

WARM_TARGET: Final = 100_000.0  # keys/s
SCALED_TARGET: Final = 200_000.0  # keys/s with 2 worker processes
SPEEDUP_TARGET: Final = 1.6  # 2 processes against 1
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
INVALIDATION_TARGET: Final = 1.0  # seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tasks", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--naive", type=int, default=2_000, help="members warmed one per task")
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--broker",
        default=None,
        help="the second broker's URL (default: a vhost of the run's own on RabbitMQ)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="CACHE_WARMUP_CHUNK_SIZE (default: setting)"
    )
    return parser.parse_args(argv)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _session_pids(session_ids: set[int]) -> list[int]:
    """Processes of the given sessions: a worker and its pool children."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in session_ids:  # session id
                found.append(int(entry.name))
    return found


def _backend_pids(stack: _stack.Stack) -> list[int]:
    import psycopg

    with psycopg.connect(_pg.ADMIN_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (stack.database,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def cpu_snapshot(stack: _stack.Stack) -> dict[str, dict[int, float]]:
    """CPU seconds so far of the workers' processes, the redis-server and the database's
    backends (each per pid: a backend that appears later started at 0)."""
    workers = _session_pids({w.pid for w in stack.workers})
    return {
        "worker": {pid: _cpu_seconds(pid) for pid in workers},
        "redis_server": {stack.redis.process.pid: _cpu_seconds(stack.redis.process.pid)},
        "postgres": {pid: _cpu_seconds(pid) for pid in _backend_pids(stack)},
    }


def cpu_split(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], keys: int
) -> dict[str, Any]:
    """Microseconds of CPU per key by party, and the keys/s those costs allow on this
    machine's cores when every core is busy."""
    per_key = {
        party: round(
            sum(t - before[party].get(pid, 0.0) for pid, t in after[party].items()) / keys * 1e6,
            2,
        )
        for party in after
    }
    total = sum(per_key.values())
    cores = os.cpu_count() or 1
    return {
        "cpu_us_per_key": per_key,
        "cpu_us_per_key_total": round(total, 2),
        "cores": cores,
        "ceiling_keys_per_second": round(cores / total * 1e6) if total else None,
    }


def _final(stack: _stack.Stack, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = stack.client.progress(task_id)
        if progress.ready:
            if progress.state != "SUCCESS":
                raise RuntimeError(f"task {task_id} {progress.state}: {progress.error}")
            return dict(progress.result)
        time.sleep(0.01)
    raise TimeoutError(f"task {task_id} not done in {timeout} s")


def bench_warmup(
    stack: _stack.Stack, members: int, kind: str, *, cpu: bool = False
) -> dict[str, Any]:
    """``member``: every member (warmup_data_type); ``all``: members then the aggregates,
    whose queries scan the whole members and payments tables (warmup_all)."""
    # The stack's own server: its cache database is emptied so every key is written again.
    admin = redis.Redis(port=stack.redis.port, db=0, socket_timeout=60)
    try:
        admin.flushdb(asynchronous=True)
    finally:
        admin.close()
    before = cpu_snapshot(stack) if cpu else None
    started = time.perf_counter()
    if kind == "member":
        task_id = stack.client.send(routing.WARMUP_DATA_TYPE, "member")
    else:
        task_id = stack.client.enqueue_warmup(kind)
    result = _final(stack, task_id, timeout=3600)
    seconds = time.perf_counter() - started
    figures = {
        "task": kind,
        "members": members,
        "processes": len(stack.workers),
        "chunks": result.get("chunks", 1),
        "written": result["written"],
        "seconds": round(seconds, 3),
        "task_seconds": result["seconds"],
        "keys_per_second": round(result["written"] / seconds),
    }
    if before is not None:
        split = cpu_split(before, cpu_snapshot(stack), result["written"])
        split["cores_busy"] = round(
            split["cpu_us_per_key_total"] * figures["keys_per_second"] / 1e6, 2
        )
        figures["cpu"] = split
    return figures


def bench_naive(stack: _stack.Stack, count: int, members: int) -> dict[str, Any]:
    keys = stack.cache.keys.members(range(1, count + 1))
    writer = stack.cache.clients.writer
    for start in range(0, len(keys), 1000):
        writer.unlink(*keys[start : start + 1000])
    started = time.perf_counter()
    sent = [
        stack.client.enqueue_warmup("members", [member_id]) for member_id in range(1, count + 1)
    ]
    enqueued = time.perf_counter() - started
    _final(stack, sent[-1], timeout=3600)  # one queue, consumed in order: the last ends it
    while stack.cache.clients.writer.exists(*keys) < count:  # and the one running beside it
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    rate = count / seconds
    return {
        "measured_members": count,
        "seconds": round(seconds, 3),
        "enqueue_seconds": round(enqueued, 3),
        "keys_per_second": round(rate),
        "extrapolated_seconds_for_all": round(members / rate, 1),
        "note": f"measured on {count:,} members, extrapolated to {members:,}",
    }


def bench_redis_benchmark(value_size: int, requests: int = 1_000_000) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"available": False}
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    server = start_embedded_redis(directory)
    try:
        done = subprocess.run(
            [
                *(binary, "-p", str(server.port), "-t", "set", "-P", "16"),
                *("-d", str(value_size), "-n", str(requests), "-q", "--csv"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    line = next(row for row in done.stdout.splitlines() if row.startswith('"SET"'))
    return {
        "available": True,
        "command": f"redis-benchmark -t set -P 16 -d {value_size} -n {requests} (50 clients)",
        "sets_per_second": round(float(line.split(",")[1].strip('"'))),
    }


def bench_invalidation(stack: _stack.Stack, rows: int) -> dict[str, Any]:
    from cache.invalidation import generations_sync
    from cache.kinds import KINDS, Change, Warm
    from db import analytics_dashboard, import_members, make_engine, session_factory
    from tasks.sources import SqlSource
    from tasks.warming import WarmReport, warm_aggregates

    cache = stack.cache
    writer = cache.clients.writer
    engine = make_engine(stack.database_url)
    sessions = session_factory(engine)
    dashboard_kind = KINDS["dashboard"]
    tags = KINDS.tags_for(Change.IMPORT)
    try:
        # Every affected read cached as the platform caches it: the warm-up fills the
        # aggregates under the generations the API reads.
        with sessions() as session:
            before = analytics_dashboard(session)["members"]["total"]
        warm_aggregates(cache, SqlSource(engine), WarmReport())
        generations = generations_sync(cache, tags)
        if generations is None:
            raise RuntimeError("Redis did not answer the generations")
        by_tag = dict(zip(tags, generations, strict=True))
        aggregates = [
            key
            for kind in KINDS.invalidated_by(Change.IMPORT)
            if kind.warm is Warm.CRITICAL
            for key in kind.variant_keys(cache.keys, by_tag)
        ]
        batch = f"{time.time_ns():x}"
        imported = [
            {
                "email": f"import-{batch}-{n}@bench.example",
                "first_name": "Imported",
                "last_name": f"Member{n}",
                "country": "US",
            }
            for n in range(rows)
        ]
        import_started = time.perf_counter()
        with sessions.begin() as session:
            import_members(session, imported)
        committed = time.perf_counter()
        stack.client.enqueue_bulk_operation("import", rows)
        while writer.exists(*aggregates) or generations_sync(cache, tags) == generations:
            time.sleep(0.001)
        fresh = time.perf_counter() - committed
        # Reads after it: the aggregate misses and loads the new totals.
        load_started = time.perf_counter()
        current = generations_sync(cache, dashboard_kind.tags) or ()
        with sessions() as session:
            dashboard = cache.get_or_load(
                dashboard_kind.key(cache.keys, (), current),
                lambda: analytics_dashboard(session),
                DataType.ANALYTICS,
            )
        reload_seconds = time.perf_counter() - load_started
    finally:
        engine.dispose()
    after = dashboard["members"]["total"]
    return {
        "rows": rows,
        "import_seconds": round(committed - import_started, 3),
        "seconds_until_fresh": round(fresh, 4),
        "members_before": before,
        "members_read_after": after,
        "read_is_fresh": after == before + rows,
        "reload_seconds": round(reload_seconds, 3),
    }


def envelope_size(stack: _stack.Stack) -> int:
    raw = stack.cache.clients.writer.get(stack.cache.keys.member(1))
    return len(raw) if raw else 300


def bench_scaling(stack: _stack.Stack, members: int, concurrency: int) -> dict[str, Any]:
    """The member warm-up with one worker process, then with ``concurrency``, on the broker
    the stack's workers use; the speedup and what the CPU cost per key allows."""
    one = bench_warmup(stack, members, "member", cpu=True)
    while len(stack.workers) < concurrency:
        stack.add_worker()
    many = bench_warmup(stack, members, "member", cpu=True)
    ceiling = one["cpu"]["ceiling_keys_per_second"]
    return {
        "warmup_1_process": one,
        "warmup": many,
        "speedup": round(many["keys_per_second"] / one["keys_per_second"], 2),
        "speedup_ok": many["keys_per_second"] >= SPEEDUP_TARGET * one["keys_per_second"],
        "scaled_ok": many["keys_per_second"] >= SCALED_TARGET,
        # What the measured CPU cost per key allows with every core busy, against one
        # process's rate: the speedup this machine can give at all.
        "speedup_ceiling": round(ceiling / one["keys_per_second"], 2) if ceiling else None,
    }


def broker_label(url: str) -> str:
    """A broker's name in the report: its URL's scheme ("amqp"); another Redis than the
    stack's is "redis-other"."""
    scheme = url.split(":", 1)[0]
    return "redis-other" if scheme.startswith("redis") else scheme


@contextmanager
def second_broker(url: str | None) -> Iterator[str | None]:
    """``url``, else a RabbitMQ vhost of the run's own (deleted after) when RabbitMQ answers,
    else None."""
    if url is not None:
        yield url
    elif not _rabbitmq.answers():
        yield None
    else:
        with _rabbitmq.vhost("bench-tasks") as own:
            yield own


def run(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()  # the machine may be shared: the figures are read against it
    with second_broker(args.broker) as other:
        figures = _run_on(args, other, load)
    if other is None:
        figures["brokers_missing"] = {
            "amqp": f"no broker answers on {_rabbitmq.HOST}:{_rabbitmq.PORT}"
        }
    return figures


def _run_on(
    args: argparse.Namespace, other: str | None, load: tuple[float, float, float]
) -> dict[str, Any]:
    # The second broker first: the Redis broker's runs end with the import, which adds
    # members, so they come last.
    stack, seeded = _stack.start(args.members, 1, broker=other, chunk_size=args.chunk_size)
    brokers: dict[str, dict[str, Any]] = {}
    try:
        if other is not None:
            on_other = bench_scaling(stack, args.members, args.concurrency)
            if other.startswith("amqp"):
                on_other["vhost"] = _rabbitmq.vhost_of(other)
            brokers[broker_label(other)] = on_other
            stack.use_broker(None)
        on_redis = bench_scaling(stack, args.members, args.concurrency)
        brokers = {"redis": on_redis, **brokers}
        warm_one, warm = on_redis["warmup_1_process"], on_redis["warmup"]
        warm_all = bench_warmup(stack, args.members, "all")
        size = envelope_size(stack)
        naive = bench_naive(stack, min(args.naive, args.members), args.members)
        invalidation = bench_invalidation(stack, args.import_rows)
    finally:
        stack.close()
    reference = bench_redis_benchmark(size)
    figures: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load],
            "python": platform.python_version(),
        },
        "seed_seconds": seeded,
        "broker": "redis",
        "warmup_1_process": warm_one,
        "warmup": warm,
        "warmup_all": warm_all,
        "naive": naive,
        "redis_benchmark": reference,
        "member_envelope_bytes": size,
        "invalidation": invalidation,
        "brokers": brokers,
    }
    for each in brokers.values():
        each["vs_redis_benchmark"] = (
            round(each["warmup"]["keys_per_second"] / reference["sets_per_second"], 3)
            if reference.get("available")
            else None
        )
    figures["verdict"] = {
        "warmup_target_keys_per_second": WARM_TARGET,
        "warmup_ok": warm["keys_per_second"] >= WARM_TARGET,
        "scaled_target_keys_per_second": SCALED_TARGET,
        "scaled_ok": on_redis["scaled_ok"],
        "speedup": on_redis["speedup"],
        "speedup_target": SPEEDUP_TARGET,
        "speedup_ok": on_redis["speedup_ok"],
        "speedup_ceiling": on_redis["speedup_ceiling"],
        "warmup_vs_naive": round(warm["keys_per_second"] / naive["keys_per_second"], 1),
        "warmup_vs_redis_benchmark": (
            round(warm["keys_per_second"] / reference["sets_per_second"], 3)
            if reference.get("available")
            else None
        ),
        "invalidation_target_seconds": INVALIDATION_TARGET,
        "invalidation_ok": invalidation["seconds_until_fresh"] < INVALIDATION_TARGET
        and invalidation["read_is_fresh"],
    }
    return figures


def render(figures: dict[str, Any], console: Console) -> None:
    naive, ref = figures["naive"], figures["redis_benchmark"]
    inv, verdict = figures["invalidation"], figures["verdict"]
    machine = figures["machine"]
    title = f"Celery tasks ({machine['cpus']} CPUs, load {machine['load_average_at_start'][0]})"
    table = Table("measure", "figure", title=title)
    every = figures["warmup_all"]
    for broker, on in figures["brokers"].items():
        for run in (on["warmup_1_process"], on["warmup"]):
            cpu = run["cpu"]
            split = ", ".join(f"{k} {v} us" for k, v in cpu["cpu_us_per_key"].items())
            table.add_row(
                f"warm-up on {broker}, {run['members']:,} members, {run['processes']} worker "
                f"process(es), {run['chunks']} chunks (warmup_data_type member, enqueue to "
                "SUCCESS)",
                f"{run['keys_per_second']:,} keys/s ({run['seconds']} s); CPU per key: "
                f"{split}; {cpu['cores_busy']} of {cpu['cores']} cores busy",
            )
        table.add_row(
            f"broker {broker}: {on['warmup']['processes']} processes against 1",
            f"{on['warmup_1_process']['keys_per_second']:,} -> "
            f"{on['warmup']['keys_per_second']:,} keys/s: {on['speedup']}x (CPU allows "
            f"{on['speedup_ceiling']}x); {on['vs_redis_benchmark']} of redis-benchmark's rate",
        )
    for broker, why in figures.get("brokers_missing", {}).items():
        table.add_row(f"broker {broker}", f"not measured: {why}")
    table.add_row(
        "warmup_all: the same members, then the aggregates (full-table analytics queries)",
        f"{every['keys_per_second']:,} keys/s ({every['seconds']} s)",
    )
    table.add_row(
        "naive: one task per member (" + naive["note"] + ")",
        f"{naive['keys_per_second']:,} keys/s (~{naive['extrapolated_seconds_for_all']:,} s)",
    )
    if ref.get("available"):
        table.add_row(
            f"{ref['command']}, {figures['member_envelope_bytes']} B values",
            f"{ref['sets_per_second']:,} SET/s",
        )
    table.add_row(
        f"invalidation after a {inv['rows']:,}-row import (commit to fresh)",
        f"{inv['seconds_until_fresh']} s; next read {inv['members_read_after']:,} members "
        f"({'fresh' if inv['read_is_fresh'] else 'STALE'})",
    )
    console.print(table)
    ok = {True: "[green]met[/green]", False: "[red]missed[/red]"}
    console.print(
        f"warm-up target >= {WARM_TARGET:,.0f} keys/s: {ok[verdict['warmup_ok']]}; "
        f"{verdict['warmup_vs_naive']}x the naive warm-up; "
        f"{verdict['warmup_vs_redis_benchmark']} of redis-benchmark's rate"
    )
    for broker, on in figures["brokers"].items():
        console.print(
            f"on {broker}: 2 processes >= {SCALED_TARGET:,.0f} keys/s: {ok[on['scaled_ok']]}; "
            f"speedup {on['speedup']}x (target {SPEEDUP_TARGET}x: "
            f"{ok[on['speedup_ok']]}); this machine's CPU per key allows at most "
            f"{on['speedup_ceiling']}x one process's rate"
        )
    console.print(
        f"import invalidation target < {INVALIDATION_TARGET} s: {ok[verdict['invalidation_ok']]}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
    else:
        render(figures, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
