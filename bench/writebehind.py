"""Write-behind: accepted events/s, flush rows/s and lag, beside the naive designs and COPY.

    python -m bench.writebehind [--json] [--seconds 3] [--threads 8] [--procs 2]
                                [--connections 64] [--members 20000] [--partitions 2]
                                [--only http] [--http-seconds 5] [--http-rounds 1]

One run, same machine, same table (member_activity_daily in a throwaway PostgreSQL database
on 127.0.0.1:5432, dropped afterwards; Redis database 14 under ``bench:wb:<hex>:``, removed).

    accept        one event per call, as the API's activity route makes them: ``--procs``
                  processes, each ``--connections`` requests in flight through
                  AsyncGroupRecorder (concurrent requests share a script call): the headline.
                  Beside: one process of it; ``--threads`` threads through GroupRecorder;
                  WriteBehind.record directly, 1 and 10 events a call; redis-py XADD of one
                  event per call from the threads (the stream write alone)
    flush         a Flusher draining a preloaded backlog (events spread over the members),
                  and ``--partitions`` flusher processes each draining its partition; beside,
                  the database half alone (apply_batch of ready rows, each batch a later
                  sighting, as a stream's batches are) and COPY
    lag           a flusher process at its defaults while 4 threads offer 5,000 events/s
                  (5 a call); accept-to-commit lag of every entry, p50/p99
    naive         one INSERT + COMMIT per event (the same threads); one Celery task per
                  event (a stock worker, 2 prefork processes, the same upsert per task)
    partitions    flush rows/s with 1, 2 and 4 partitions (one flusher process each), on
                  this Redis and on a 3-master Cluster started by the run (bench/_wb_partitions)
    http          the API's POST /api/v1/members/{id}/activity under wrk (1 event, and 10
                  events a request; 50 connections) beside the cached member GET on the same
                  server (bench/_wb_http); ``--http-rounds`` repeats the three runs and
                  reports the median round (the host's other load drifts between runs)

``--only http`` runs the http part alone (its throwaway database, its report fields).

Targets: >= 20,000 events/s accepted, >= 100,000 rows/s flushed, lag p99 <= 1 s; over HTTP,
single events >= 0.8x the cached member GET's requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg
import redis
from rich.console import Console
from rich.table import Table

from bench import _pg, _wb_http, _wb_partitions
from bench._common import BENCH_DB, clear_prefix
from cache import build_cache
from cache.client import connect_async
from cache.writebehind import (
    ActivityEvent,
    ActivityRow,
    AsyncGroupRecorder,
    Flusher,
    GroupRecorder,
    WriteBehind,
    WriteBehindConfig,
)
from config import Settings, load_settings
from db import make_engine
from db.writebehind import apply_batch
from tasks.writebehind import sql_apply

KINDS: Final = ("login", "checkin", "page_view")
LAG_RATE: Final = 5_000
LAG_BATCH: Final = 5  # events a call: 1,000 calls/s, within this client's round-trip budget
NAIVE_QUEUE: Final = "bench.writebehind.naive"
TARGETS: Final = {"accepted_per_s": 20_000, "flush_rows_per_s": 100_000, "lag_p99_s": 1.0}
NAIVE_SQL: Final = (
    "INSERT INTO member_activity_daily AS a"
    " (member_id, day, logins, checkins, page_views, last_seen_at)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (member_id, day) DO UPDATE SET"
    " logins = a.logins + EXCLUDED.logins, checkins = a.checkins + EXCLUDED.checkins,"
    " page_views = a.page_views + EXCLUDED.page_views,"
    " last_seen_at = GREATEST(a.last_seen_at, EXCLUDED.last_seen_at)"
)


def bench_settings(prefix: str) -> Settings:
    return load_settings(
        redis_db=BENCH_DB, redis_key_prefix=prefix, redis_url=None, redis_sentinels="",
        redis_cluster_nodes="", redis_socket_timeout=2.0,
    )  # fmt: skip


def _event(rng: random.Random, members: int) -> ActivityEvent:
    return ActivityEvent(rng.randint(1, members), rng.choice(KINDS))


def threaded_rate(threads: int, seconds: float, make: Callable[[int], Callable[[], int]]) -> float:
    """Units per second of ``threads`` threads each calling its own ``make(i)()`` in a loop."""
    counts = [0] * threads
    stop = threading.Event()

    def loop(index: int) -> None:
        call = make(index)
        while not stop.is_set():
            counts[index] += call()

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def measure_accept(
    wb: WriteBehind, floor: redis.Redis, opts: argparse.Namespace
) -> dict[str, float]:
    def recorder(per_call: int) -> Callable[[int], Callable[[], int]]:
        def make(index: int) -> Callable[[], int]:
            rng = random.Random(index)
            return lambda: len(wb.record([_event(rng, opts.members) for _ in range(per_call)]))

        return make

    def xadd(index: int) -> Callable[[], int]:
        key = wb.keys.writebehind("floor")
        fields: dict[Any, Any] = {"m": index, "k": "l", "t": 1, "n": 1}

        def one() -> int:
            floor.xadd(key, fields)
            return 1

        return one

    grouped = GroupRecorder(wb)

    def combined(index: int) -> Callable[[], int]:
        rng = random.Random(index)
        return lambda: len(grouped.record([_event(rng, opts.members)]))

    out = {
        "accepted_per_s": producer_processes(opts.procs, opts),
        "accepted_async_1proc_per_s": producer_processes(1, opts),
        "accepted_threads_per_s": threaded_rate(opts.threads, opts.seconds, combined),
        "accepted_direct_per_s": threaded_rate(opts.threads, opts.seconds, recorder(1)),
        "accepted_batch10_per_s": threaded_rate(opts.threads, opts.seconds, recorder(10)),
        "xadd_floor_per_s": threaded_rate(opts.threads, opts.seconds, xadd),
    }
    floor.delete(wb.keys.writebehind("floor"))
    return out


def producer_processes(procs: int, opts: argparse.Namespace) -> float:
    """Events/s of ``procs`` producer processes started together (async_producer each)."""
    start_at = time.time() + 1.5 + 0.5 * procs  # after every child has imported and connected
    argv = [str(opts.connections), str(opts.seconds), str(start_at), str(opts.members)]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.writebehind", "--producer-child", *argv, str(i)],
            env={**os.environ, "REDIS_KEY_PREFIX": opts.prefix},
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    counts = [json.loads(child.communicate(timeout=120)[0].splitlines()[-1]) for child in children]
    return float(sum(c["events"] for c in counts) / max(c["seconds"] for c in counts))


def async_producer(
    connections: int, seconds: float, start_at: float, members: int, seed: int
) -> None:
    """``connections`` requests in flight, one event each, through AsyncGroupRecorder."""
    settings = bench_settings(os.environ["REDIS_KEY_PREFIX"])
    cache = build_cache(settings)
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig(max_backlog=10**7))

    async def run() -> tuple[int, float]:
        clients = connect_async(settings)
        recorder = AsyncGroupRecorder(wb, clients.writer)
        count, stop = 0, asyncio.Event()

        async def request(index: int) -> None:
            nonlocal count
            rng = random.Random(seed * 10_000 + index)
            while not stop.is_set():
                accepted = len(await recorder.record([_event(rng, members)]))
                count += accepted

        await clients.writer.ping()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        tasks = [asyncio.create_task(request(i)) for i in range(connections)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        spent = time.perf_counter() - started
        await clients.close()
        return count, spent

    events, spent = asyncio.run(run())
    cache.close()
    print(json.dumps({"events": events, "seconds": spent}))


def measure_flush(
    wb: WriteBehind, url: str, dsn: str, opts: argparse.Namespace
) -> dict[str, float]:
    preload(wb, opts.backlog, opts.members, seed=7)
    engine = make_engine(url)
    try:
        flusher = Flusher(wb, sql_apply(engine), "bench-flush")
        started = time.perf_counter()
        flusher.drain(300, until_empty=True)
        spent = time.perf_counter() - started
        # The database half alone: the same statement on ready rows, 2,000 a batch, each
        # batch a later sighting than the last (as the batches of a stream are).
        rng, at = random.Random(8), dt.datetime.now(dt.UTC)
        batches = [
            [
                ActivityRow(m, at.date(), 1, 0, 1, at + dt.timedelta(milliseconds=n))
                for m in sorted(rng.sample(range(1, opts.members + 1), 2000))
            ]
            for n in range(max(1, opts.backlog // 4000))
        ]
        began = time.perf_counter()
        for n, rows in enumerate(batches):
            apply_batch(engine, "bench:db-only", f"{n + 1}-0", rows)
        db_only = len(batches) * 2000 / (time.perf_counter() - began)
    finally:
        engine.dispose()
    return {
        "flush_events_per_s": flusher.stats.events / spent,
        "flush_rows_per_s": flusher.stats.rows / spent,
        "flush_batches": flusher.stats.batches,
        **measure_partitioned_flush(url, opts),
        "db_apply_rows_per_s": db_only,
        "copy_rows_per_s": measure_copy(dsn, opts.members),
    }


def preload(wb: WriteBehind, events: int, members: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(0, events, 500):
        wb.record([_event(rng, members) for _ in range(500)])


def measure_partitioned_flush(url: str, opts: argparse.Namespace) -> dict[str, float]:
    """``--partitions`` flusher processes, each draining its partition of the same backlog
    (bench._wb_partitions, under a prefix of its own that it clears)."""
    found = _wb_partitions.flush_rate(
        url, f"{opts.prefix}parted:", opts.partitions, opts.backlog, opts.members
    )
    return {
        "flush_partitions": opts.partitions,
        "flush_partitioned_events_per_s": found["events"] / found["seconds"],
        "flush_partitioned_rows_per_s": found["rows"] / found["seconds"],
    }


def measure_copy(dsn: str, members: int) -> float:
    """COPY of fresh rows into the same table (days no other phase writes), then removed."""
    days = [dt.date(2001, 1, 1) + dt.timedelta(days=d) for d in range(10)]
    text = "".join(f"{m}\t{day}\t1\t0\t1\n" for day in days for m in range(1, members + 1))
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.cursor().copy(
            "COPY member_activity_daily (member_id, day, logins, checkins, page_views) FROM STDIN"
        ) as copy:
            copy.write(text)
        conn.commit()
        rate = len(days) * members / (time.perf_counter() - started)
        conn.execute("DELETE FROM member_activity_daily WHERE day < '2002-01-01'")
        conn.commit()
    return rate


def measure_naive_sql(dsn: str, opts: argparse.Namespace) -> float:
    connections = [psycopg.connect(dsn) for _ in range(opts.threads)]

    def make(index: int) -> Callable[[], int]:
        conn, rng = connections[index], random.Random(index)

        def one() -> int:
            member, kind = rng.randint(1, opts.members), rng.randrange(3)
            now = dt.datetime.now(dt.UTC)
            deltas = [int(kind == k) for k in range(3)]
            conn.execute(NAIVE_SQL, (member, now.date(), *deltas, now))
            conn.commit()
            return 1

        return one

    try:
        return threaded_rate(opts.threads, opts.seconds, make)
    finally:
        for conn in connections:
            conn.close()


def measure_lag(
    settings: Settings, wb: WriteBehind, url: str, opts: argparse.Namespace
) -> dict[str, float]:
    """A flusher process at its defaults; producers hold LAG_RATE events/s for --lag-seconds."""
    env = {**os.environ, "REDIS_KEY_PREFIX": settings.redis_key_prefix}
    argv = ["--flusher-child", url, str(opts.lag_seconds + 2)]
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.writebehind", *argv],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    child.stdout.readline()  # "ready"
    per_thread, sent = LAG_RATE / 4, [0] * 4  # 4 threads, LAG_BATCH events a call

    def produce(index: int) -> None:
        rng, started = random.Random(index), time.monotonic()
        while (elapsed := time.monotonic() - started) < opts.lag_seconds:
            if (due := sent[index] / per_thread - elapsed) > 0:
                time.sleep(due)
            wb.record([_event(rng, opts.members) for _ in range(LAG_BATCH)])
            sent[index] += LAG_BATCH

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    backlog = wb.health().backlog
    result: dict[str, float] = json.loads(child.communicate(timeout=60)[0].splitlines()[-1])
    result["lag_offered_per_s"] = sum(sent) / opts.lag_seconds
    result["lag_backlog_at_end_of_load"] = backlog
    return result


def flusher_child(url: str, seconds: float) -> None:
    settings = bench_settings(os.environ["REDIS_KEY_PREFIX"])
    cache, engine = build_cache(settings), make_engine(url)
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig(max_backlog=10**7))
    flusher = Flusher(wb, sql_apply(engine), "bench-lag")
    wb.ensure_group()
    print("ready", flush=True)
    stats = flusher.drain(seconds)
    lags = sorted(stats.lags_ms)
    print(json.dumps({
        "lag_events": stats.events, "lag_batches": stats.batches,
        "lag_p50_s": stats.lag_quantile(0.5), "lag_p99_s": stats.lag_quantile(0.99),
        "lag_max_s": (lags[-1] / 1000) if lags else 0.0,
    }))  # fmt: skip
    engine.dispose()
    cache.close()


def naive_celery_app(broker: str, dsn: str) -> Any:
    """A stock Celery app whose task writes one event: INSERT and UPDATE, COMMIT."""
    from celery import Celery

    app = Celery("bench_wb_naive", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=NAIVE_QUEUE,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    local = threading.local()

    @app.task(name="bench.writebehind.naive_event")
    def naive_event(member: int, kind: int, at: str) -> None:
        if getattr(local, "conn", None) is None:
            local.conn = psycopg.connect(dsn)
        moment = dt.datetime.fromisoformat(at)
        deltas = [int(kind == k) for k in range(3)]
        local.conn.execute(NAIVE_SQL, (member, moment.date(), *deltas, moment))
        local.conn.commit()

    return app


def measure_naive_celery(settings: Settings, dsn: str, opts: argparse.Namespace) -> float:
    broker = settings.redis_url_for(db=BENCH_DB)
    client = redis.Redis.from_url(broker)
    client.delete(NAIVE_QUEUE, "unacked", "unacked_index")
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.writebehind", "--celery-child", broker, dsn],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        app = naive_celery_app(broker, dsn)
        rng, at = random.Random(3), dt.datetime.now(dt.UTC).isoformat()
        with psycopg.connect(dsn, autocommit=True) as conn:

            def written() -> int:
                query = "SELECT sum(logins + checkins + page_views) FROM member_activity_daily"
                row = conn.execute(query).fetchone()
                return int(row[0] or 0) if row else 0

            base, tasks = written(), int(opts.naive_tasks)
            app.send_task("bench.writebehind.naive_event", (1, 0, at))  # the worker is up
            deadline = time.monotonic() + 60
            while written() == base:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the naive Celery worker did not start")
                time.sleep(0.05)
            started = time.perf_counter()
            for _ in range(tasks):
                member, kind = rng.randint(1, opts.members), rng.randrange(3)
                app.send_task("bench.writebehind.naive_event", (member, kind, at))
            while written() < base + 1 + tasks:
                time.sleep(0.02)
            return tasks / (time.perf_counter() - started)
    finally:
        worker.terminate()
        worker.wait(30)
        client.delete(NAIVE_QUEUE, "unacked", "unacked_index", "_kombu.binding." + NAIVE_QUEUE)
        client.close()


def run(opts: argparse.Namespace) -> dict[str, Any]:
    opts.prefix = f"bench:wb:{secrets.token_hex(4)}:"
    settings = bench_settings(opts.prefix)
    cache = build_cache(settings)
    floor = redis.Redis.from_url(settings.redis_url_for())
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig(max_backlog=10**7))
    report: dict[str, Any] = {
        "load_average": os.getloadavg()[0],
        "threads": opts.threads,
        "procs": opts.procs,
        "connections": opts.connections,
    }
    try:
        with _pg.throwaway(opts.members) as db:
            url, dsn = db.url, db.dsn
            wb.ensure_group()
            report |= measure_accept(wb, floor, opts)
            clear_prefix(settings.redis_key_prefix, floor)
            wb.ensure_group()
            report |= measure_flush(wb, url, dsn, opts)
            report |= measure_lag(settings, wb, url, opts)
            report["naive_insert_commit_per_s"] = measure_naive_sql(dsn, opts)
            report["naive_celery_task_per_s"] = measure_naive_celery(settings, dsn, opts)
            report["flush_by_partitions"] = _wb_partitions.measure(
                url, opts.prefix, opts.partition_backlog, opts.members
            )
            report["http"] = _wb_http.measure(
                url, opts.members, opts.http_seconds, opts.prefix, opts.http_rounds
            )
    finally:
        clear_prefix(settings.redis_key_prefix, floor)
        floor.close()
        cache.close()
    accepted, rows = report["accepted_per_s"], report["flush_rows_per_s"]
    report["ratios"] = {
        "accept_vs_xadd_floor": accepted / report["xadd_floor_per_s"],
        "direct_record_vs_xadd_floor": report["accepted_direct_per_s"] / report["xadd_floor_per_s"],
        "accept_vs_naive_insert_commit": accepted / report["naive_insert_commit_per_s"],
        "accept_vs_naive_celery_task": accepted / report["naive_celery_task_per_s"],
        "flush_vs_db_apply_alone": rows / report["db_apply_rows_per_s"],
        "partitioned_flush_vs_one_flusher": report["flush_partitioned_rows_per_s"] / rows,
        "flush_vs_copy": rows / report["copy_rows_per_s"],
    }
    best_rows = max(rows, report["flush_partitioned_rows_per_s"])
    report["targets_met"] = {
        "accepted_per_s": accepted >= TARGETS["accepted_per_s"],
        "flush_rows_per_s": best_rows >= TARGETS["flush_rows_per_s"],
        "lag_p99_s": report["lag_p99_s"] <= TARGETS["lag_p99_s"],
        "http_single_vs_get": report["http"]["target_met"],
    }
    return report


def run_http(opts: argparse.Namespace) -> dict[str, Any]:
    """The http part alone: the same fields as in the full report, no others."""
    prefix = f"bench:wb:{secrets.token_hex(4)}:"
    report: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    with _pg.throwaway(opts.members) as db:
        report["http"] = _wb_http.measure(
            db.url, opts.members, opts.http_seconds, prefix, opts.http_rounds
        )
    report["targets_met"] = {"http_single_vs_get": report["http"]["target_met"]}
    return report


def render(report: dict[str, Any]) -> None:
    console = Console()
    if "accepted_per_s" in report:
        render_store(console, report)
    render_http(console, report["http"])
    for name, value in report.get("ratios", {}).items():
        console.print(f"{name}: {value:.2f}x")
    met = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in report["targets_met"].items())
    console.print(f"targets: {met} (load average {report['load_average']:.1f})")


def render_store(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"write-behind, one run (load average {report['load_average']:.1f})")
    table.add_column("path")
    table.add_column("rate", justify="right")
    procs, conns = report["procs"], report["connections"]
    rows = [
        (
            f"accept: {procs} processes x {conns} requests in flight, 1 event each",
            report["accepted_per_s"],
            "events/s",
        ),
        (f"  1 process x {conns} (AsyncGroupRecorder)", report["accepted_async_1proc_per_s"],
         "events/s"),
        (f"  GroupRecorder, {report['threads']} threads, 1 event/call",
         report["accepted_threads_per_s"], "events/s"),
        ("  WriteBehind.record, 1 event/call", report["accepted_direct_per_s"], "events/s"),
        ("  WriteBehind.record, 10 events/call", report["accepted_batch10_per_s"], "events/s"),
        ("redis-py XADD per event (floor)", report["xadd_floor_per_s"], "events/s"),
        ("flush: drain a backlog, one flusher", report["flush_events_per_s"], "events/s"),
        ("flush: rows upserted, one flusher", report["flush_rows_per_s"], "rows/s"),
        (f"flush: rows upserted, {report['flush_partitions']} partitions",
         report["flush_partitioned_rows_per_s"], "rows/s"),
        ("database half alone (apply_batch)", report["db_apply_rows_per_s"], "rows/s"),
        ("PostgreSQL COPY, same table", report["copy_rows_per_s"], "rows/s"),
        ("naive: INSERT + COMMIT per event", report["naive_insert_commit_per_s"], "events/s"),
        ("naive: one Celery task per event", report["naive_celery_task_per_s"], "events/s"),
    ]  # fmt: skip
    for label, value, unit in rows:
        table.add_row(label, f"{value:,.0f} {unit}")
    lag = (f"p50 {report['lag_p50_s'] * 1000:.0f} ms, p99 {report['lag_p99_s'] * 1000:.0f} ms,"
           f" max {report['lag_max_s'] * 1000:.0f} ms")  # fmt: skip
    table.add_row(f"lag at {report['lag_offered_per_s']:,.0f} events/s offered", lag)
    console.print(table)
    scaling = Table(title="flush rows/s by partitions (one flusher process each)")
    for column in ("redis", "partitions", "on shards", "rows/s", "seconds"):
        scaling.add_column(column, justify="right")
    for where, runs in report["flush_by_partitions"].items():
        for one in runs:
            scaling.add_row(
                where, str(one["partitions"]), str(one["shards"]), f"{one['rows_per_s']:,}",
                f"{one['seconds']}",
            )  # fmt: skip
    console.print(scaling)


def render_http(console: Console, http: dict[str, Any]) -> None:
    web = Table(title=f"HTTP, one API server, wrk {http['connections']} connections")
    for column in ("route", "requests/s", "events/s", "p50 ms", "p99 ms", "errors"):
        web.add_column(column, justify="right")
    for label, name in (
        ("GET /api/v1/members/{id} (cached)", "member_get"),
        ("POST .../activity, 1 event", "activity_single"),
        ("POST .../activity, 10 events", "activity_batch10"),
    ):
        one = http[name]
        web.add_row(
            label, f"{one['rps']:,.0f}", f"{one.get('events_per_s', 0):,.0f}",
            f"{one['p50_ms']}", f"{one['p99_ms']}", str(one["errors"]),
        )  # fmt: skip
    console.print(web)
    console.print(
        f"single events / cached GETs: {http['single_vs_get']}x (target "
        f"{http['target_single_vs_get']}x)"
    )
    if http.get("rounds", 1) > 1:
        ratios = ", ".join(str(one["single_vs_get"]) for one in http["by_round"])
        console.print(f"  by round: {ratios} (the table shows the median round)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.writebehind", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per rate measurement")
    parser.add_argument("--threads", type=int, default=8, help="producer threads (GroupRecorder)")
    parser.add_argument("--procs", type=int, default=2, help="producer processes")
    parser.add_argument(
        "--connections", type=int, default=64, help="requests in flight per producer process"
    )
    parser.add_argument("--partitions", type=int, default=2, help="partitioned flush: processes")
    parser.add_argument("--members", type=int, default=20_000, help="members seeded and written")
    parser.add_argument("--backlog", type=int, default=200_000, help="events preloaded to flush")
    parser.add_argument("--naive-tasks", type=int, default=2_000, help="Celery tasks sent")
    parser.add_argument("--lag-seconds", type=float, default=10.0, help="steady-load duration")
    parser.add_argument(
        "--partition-backlog", type=int, default=100_000, help="events a partition-count run"
    )
    parser.add_argument("--http-seconds", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument(
        "--http-rounds", type=int, default=1, help="rounds of the 3 wrk runs: the median's figures"
    )
    parser.add_argument(
        "--only", choices=["http"], help="run one part alone (http: the API under wrk)"
    )
    parser.add_argument("--flusher-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--celery-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--producer-child", nargs=5, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.producer_child:
        conns, secs, start_at, members, seed = opts.producer_child
        async_producer(int(conns), float(secs), float(start_at), int(members), int(seed))
        return 0
    if opts.flusher_child:
        flusher_child(opts.flusher_child[0], float(opts.flusher_child[1]))
        return 0
    if opts.celery_child:
        app = naive_celery_app(*opts.celery_child)
        app.worker_main(
            ["worker", "-c", "2", "-P", "prefork", "-Q", NAIVE_QUEUE, "-l", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"]
        )  # fmt: skip
        return 0
    report = run_http(opts) if opts.only == "http" else run(opts)
    if opts.json:
        print(json.dumps(report, indent=None, default=float))
    else:
        render(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
