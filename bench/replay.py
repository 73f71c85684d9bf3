"""``python -m bench.replay``: a day of traffic replayed against the whole platform, twice.

A trace (bench._trace: Zipf 1.0 over the members, a diurnal curve, 5% writes, activity
events, a bulk import every quarter of the day, one Redis master kill, one management
``clear``; a fixed seed) is replayed against the API, a worker and beat started as ``cachectl
up`` starts them (bench._stack.start_platform), once with the cache off (CACHE_ENABLED=false)
and once on, in the same run, each on its own copy of one seeded database; the cache-on pass
starts from a warm cache (the platform's ``warmup all``: a day starts from yesterday's
cache). Redis is a private Sentinel deployment (bench._sentinel: master, replica, three
Sentinels); the broker a private redis-server beside it, so the failover tests the cache,
not Celery's reconnection.

Reported per pass: per route p50/p99 (outside the failover window) and 5xx inside and
outside it, database transactions per 1,000 requests (pg_stat_database: xact_commit, and all
transactions with the reads' rollbacks; counted from the day's start, with the platform's
start and the warm-up before it reported apart as ``setup_transactions``), the hit rate over
time, the write-behind lag, and the consistency monitor's figures (every write sampled in
the cache-on pass; after the replay the run waits for the last checks of the longest
window), and where the CPU went, by role (bench._cpu: API, worker, PostgreSQL, Redis, the
replayer). The targets: >= 6 nines of sampled writes consistent within 1 s and all within 60
s, through the failover; database transactions with the cache <= 10% of without; p99 of
every cached route < 10 ms outside the failover window (also given outside the failover and
the rejoined replica's full sync); no 5xx outside it.

Output: a table (or ``--json``: one JSON object on stdout), and ``--out DIR``: replay.json
and replay.html (self-contained: the dashboard's offline uPlot inline). A progress bar on
stderr while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.progress import Progress, TaskID

from api_stub.management import hash_token
from bench import _pg
from bench._cpu import CpuSampler
from bench._replay_report import pass_figures, table, verdict, write_html
from bench._replayer import Incident, Recording, replay
from bench._sentinel import MASTER_NAME, SentinelGroup, free_port
from bench._stack import start_platform
from bench._trace import Trace, generate
from cache.consistency import CLAIM_LEASE_S
from cachectl.embedded import EmbeddedRedis, start_embedded_redis
from workers.client import Progress as TaskProgress
from workers.client import TaskClient

PREFIX: Final = "bench:replay:"
DRAIN_MARGIN_S: Final = 20.0
CLEAR_TIMEOUT_S: Final = 120.0
WARM_TIMEOUT_S: Final = 900.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per pass")
    parser.add_argument("--peak-rps", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--import-rows", type=int, default=500)
    parser.add_argument("--windows", default="1,10,60", help="consistency windows, seconds")
    parser.add_argument("--down-after-ms", type=int, default=3000, help="Sentinel down-after")
    # Four: a flush of the write-behind stream holds a process for up to 10 s per run and
    # warm-ups for longer; the monitor's ticks, dropped after 1 s in the queue, need a free one.
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="a third pass, cache on, without the reads (the writes, activity, imports, kill"
        " and clear): the database transactions no cache removes, the db ratio's floor",
    )
    parser.add_argument("--out", type=Path, default=Path("var/replay"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.members < 100 or args.duration <= 0 or args.peak_rps <= 0:
        parser.error("--members >= 100, --duration and --peak-rps > 0")
    return args


class Run:
    """The shared parts of both passes: the Sentinel deployment, the broker, the seeded
    template database, and the management token the passes' APIs accept."""

    def __init__(self, args: argparse.Namespace, workdir: Path, progress: Progress) -> None:
        self.args = args
        self.workdir = workdir
        self.progress = progress
        self.token = secrets.token_hex(16)
        self.group = SentinelGroup(workdir / "redis", args.down_after_ms)
        self.broker: EmbeddedRedis | None = None
        self.template: _pg.Seeded | None = None
        self.timings: dict[str, float] = {}
        self.healing: threading.Thread | None = None

    def start(self) -> None:
        task = self.progress.add_task("sentinels, broker, database", total=3)
        started = time.monotonic()
        self.group.start()
        self.timings["sentinels_s"] = round(time.monotonic() - started, 1)
        self.progress.advance(task)
        self.broker = start_embedded_redis(self.workdir / "broker")
        self.progress.advance(task)
        started = time.monotonic()
        self.template = _pg.create_seeded(self.args.members)
        self.timings["seed_s"] = round(time.monotonic() - started, 1)
        self.progress.advance(task)

    def close(self) -> None:
        try:
            self.group.stop()
        finally:
            if self.broker is not None:
                self.broker.stop()
            if self.template is not None:
                _pg.drop(self.template.name)

    def env(self, cache_on: bool, database_url: str, api_port: int) -> dict[str, str]:
        assert self.broker is not None
        broker = f"redis://127.0.0.1:{self.broker.port}"
        return {
            "REDIS_SENTINELS": self.group.hosts,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_KEY_PREFIX": PREFIX,
            "CELERY_BROKER_URL": f"{broker}/1",
            "CELERY_RESULT_BACKEND": f"{broker}/2",
            "DATABASE_URL": database_url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(api_port),
            "CACHE_ENABLED": str(cache_on).lower(),
            "MANAGEMENT_TOKENS": f"admin:{hash_token(self.token)}:bench-replay",
            # With the cache off every read is the database's: nothing to be inconsistent.
            "CONSISTENCY_SAMPLE_RATE": "1" if cache_on else "0",
            "CONSISTENCY_WINDOWS_S": self.args.windows,
            "CONSISTENCY_PROBE_URL": f"http://127.0.0.1:{api_port}",
            "PYTHONUNBUFFERED": "1",
        }

    # --- one pass --------------------------------------------------------------------------
    def run_pass(self, name: str, cache_on: bool, trace: Trace) -> dict[str, Any]:
        assert self.template is not None
        timings: dict[str, float] = {}
        mark = time.monotonic()
        if self.healing is not None:
            self.healing.join()
        self.group.wait_healthy(60)  # the last pass's killed master is a replica again
        self.group.flush()
        db = _pg.clone(self.template)

        def lap(phase: str) -> None:
            nonlocal mark
            timings[phase] = round(time.monotonic() - mark, 1)
            mark = time.monotonic()

        try:
            api_port = free_port()
            before = _pg.settled(db.dsn)
            lap("prepare_s")
            platform = start_platform(
                self.env(cache_on, db.url, api_port), self.workdir / name, self.args.concurrency
            )
            lap("start_s")
            try:
                warmed = self.warm(platform.services.tasks) if cache_on else {}
                if cache_on:
                    lap("warm_s")
                # The day's transactions are counted from here: the platform's start and
                # yesterday's cache (the warm-up) are reported apart.
                started = _pg.counted(db.dsn)
                lap("count_s")
                task = self.progress.add_task(f"replay, cache {name}", total=trace.duration)
                sampler = CpuSampler().start()
                try:
                    recording = asyncio.run(
                        replay(
                            platform.base_url,
                            trace,
                            self.token,
                            self.incidents(platform.base_url),
                            lambda at: self.progress.update(task, completed=at),
                        )
                    )
                finally:
                    cpu = sampler.stop()
                lap("replay_s")
                figures = self.settle(platform.base_url, drain=cache_on)
                lap("drain_s")
            finally:
                platform.close()
            counts = _pg.settled(db.dsn) - started
            lap("stop_s")
        finally:
            _pg.drop(db.name)
        transactions = {
            "commits": counts.writes,
            "rollbacks": counts.reads,
            "transactions": counts.transactions,
            "setup_transactions": (started - before).transactions,
        }
        write_answers(recording, self.args.out / f"answers-{name}.csv")
        found = pass_figures(
            recording,
            trace.duration,
            transactions,
            figures.get("consistency"),
            (figures.get("latency") or {}).get("by_kind"),
        )
        return found | {"timings": timings, "warm_written": warmed.get("written"), "cpu": cpu}

    def warm(self, tasks: TaskClient) -> dict[str, Any]:
        """Yesterday's cache: every member and aggregate, by the platform's own warm-up
        (``warmup all``), before the day starts; a day compressed into minutes has too few
        requests to warm a large table by reading it."""
        task = self.progress.add_task("warm-up (warmup all)", total=1.0)
        deadline = time.monotonic() + WARM_TIMEOUT_S
        while True:
            found = self._await(tasks, tasks.enqueue_warmup("all"), task, deadline)
            # The platform's own start-up warm-up may hold the lease: ``all`` is then skipped
            # (SUCCESS, "skipped": "running") and is sent again once that one is done.
            if not (found.result or {}).get("skipped"):
                break
            time.sleep(0.5)
        self.progress.update(task, completed=1.0)
        return dict(found.result)

    def _await(
        self, tasks: TaskClient, task_id: str, task: TaskID, deadline: float
    ) -> TaskProgress:
        while True:
            found = tasks.progress(task_id)
            if found.fraction is not None:
                self.progress.update(task, completed=found.fraction)
            if found.ready:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up did not finish in {WARM_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        if found.state != "SUCCESS":
            raise RuntimeError(f"the warm-up failed: {found.error}")
        return found

    def incidents(self, base_url: str) -> dict[str, tuple[float, Incident]]:
        group, token = self.group, self.token
        trace_kill, trace_clear = self.trace.kill_at, self.trace.clear_at

        async def kill() -> dict[str, float]:
            def work() -> dict[str, float]:
                node = group.kill_master()
                group.wait_promoted(node.port)
                promoted = time.monotonic()
                group.rejoin(node)  # back as a replica of the new master
                # The deployment heals beside the rest of the pass; the next pass waits for it.
                self.healing = threading.Thread(target=group.wait_healthy, args=(60,))
                self.healing.start()
                # The failover's recovery ends when the rejoined node holds the data again:
                # its full sync forks the master and loads every key (on this machine, the
                # same cores the API and the database use).
                group.wait_resynced(node)
                return {"promoted": promoted, "resynced": time.monotonic()}

            return await asyncio.to_thread(work)

        async def clear() -> dict[str, float]:
            # An API saturated by the uncached pass may answer late or not at all: the
            # outcome is reported, the replay goes on.
            async with httpx.AsyncClient(base_url=base_url, timeout=CLEAR_TIMEOUT_S) as client:
                try:
                    answer = await client.delete(
                        "/api/v1/cache/clear",
                        params={"pattern": "*"},
                        headers={"authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError:
                    return {"clear_failed": time.monotonic()}
            done = "cleared" if answer.status_code == 200 else "clear_failed"
            return {done: time.monotonic()}

        return {"kill": (trace_kill, kill), "clear": (trace_clear, clear)}

    def settle(self, base_url: str, *, drain: bool) -> dict[str, Any]:
        """The platform's figures once the monitor has no check pending (when ``drain``):
        the last write's checks, and a sample checked again one window later (a later change
        on its way, tasks/monitor.py), within twice the longest window; a claim whose reply
        the failover lost falls due again when its lease ends (CLAIM_LEASE_S)."""
        longest = max(float(w) for w in self.args.windows.split(","))
        wait = max(2 * longest, CLAIM_LEASE_S) + DRAIN_MARGIN_S
        deadline = time.monotonic() + (wait if drain else 0.0)
        task = self.progress.add_task("last consistency checks", total=None) if drain else None
        headers = {"authorization": f"Bearer {self.token}"}
        figures: dict[str, Any] = {}
        while True:
            try:
                answer = httpx.get(f"{base_url}/api/v1/cache/metrics", headers=headers, timeout=10)
                figures = answer.json() if answer.status_code == 200 else figures
            except (httpx.HTTPError, ValueError):
                pass
            consistency = figures.get("consistency") or {}
            pending = sum(
                int(w.get("pending") or 0) for w in consistency.get("windows", {}).values()
            )
            if not drain or time.monotonic() > deadline:
                break
            if consistency.get("available") and pending == 0:
                break
            time.sleep(1.0)
        if task is not None:
            self.progress.update(task, total=1, completed=1)
        return figures

    trace: Trace


def write_answers(recording: Recording, path: Path) -> None:
    """Every answer of a pass (due time, route, status, client latency, X-Cache, tier, path)
    beside the report, for a post-mortem of a slow second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(("at_s", "route", "status", "latency_ms", "cache", "tier", "path"))
        for a in recording.answers:
            latency_ms = round(a.latency_s * 1000, 3)
            rows.writerow((a.at, a.route, a.status, latency_ms, a.cache, a.tier, a.path))


def keep_logs(workdir: Path, into: Path) -> None:
    """Each pass's process logs (API, worker, beat) and the Redis and Sentinel nodes' logs
    beside the report, for a post-mortem of what the figures show (an inconsistency's key, a
    slow second, a failover)."""
    shutil.rmtree(into, ignore_errors=True)
    for logs in sorted(workdir.glob("*/logs")):
        shutil.copytree(logs, into / logs.parent.name)
    for log in sorted(workdir.glob("redis/*/log")):
        (into / "redis").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, into / "redis" / f"{log.parent.name}.log")


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    started = time.monotonic()
    trace = generate(
        members=args.members,
        duration=args.duration,
        peak_rps=args.peak_rps,
        seed=args.seed,
        import_rows=args.import_rows,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    with Progress(console=console, transient=False) as progress:
        run_ = Run(args, workdir, progress)
        run_.trace = trace
        try:
            run_.start()
            passes = {"off": run_.run_pass("off", False, trace)}
            passes["on"] = run_.run_pass("on", True, trace)
            if args.floor:
                unread = [request for request in trace.requests if request.method != "GET"]
                floor = dataclasses.replace(trace, requests=tuple(unread))
                passes["floor"] = run_.run_pass("floor", True, floor)
        finally:
            keep_logs(workdir, args.out / "logs")
            run_.close()
            shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "setup": {
            "members": args.members,
            "duration_s": args.duration,
            "peak_rps": args.peak_rps,
            "seed": args.seed,
            "requests_in_trace": len(trace.requests),
            "writes_in_trace": trace.writes,
            "imports": len(trace.imports),
            "import_rows": args.import_rows,
            "windows_s": args.windows,
            "sentinel_down_after_ms": args.down_after_ms,
            "latency": "client-side (aiohttp, same host), includes the client's own scheduling",
            "timings": run_.timings,
        },
        "passes": passes,
    }
    result["verdict"] = verdict(passes["on"], passes["off"], passes.get("floor"))
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    result = run(args, console)
    result["table"] = table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(json.dumps(result, indent=1))
    write_html(result, args.out / "replay.html")
    out(json.dumps(result) if args.json else result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
