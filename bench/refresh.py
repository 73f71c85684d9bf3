"""Refresh-ahead of the hot set, on vs off, in one run: misses of the hottest 1% and database
queries, with TTLs shortened so the run crosses several expiries.

    python -m bench.refresh [--json] [--members 10000] [--seconds 40] [--ttl 6] [--rate 1500]
                            [--policy volatile-lfu|noeviction]

Workload: Zipf(1.0) reads over the members, ranked the way the warm-up ranks them (the
members with the most recent payments are the most read: those the critical warm-up warms),
plus 5% reads of the aggregates and lookups (the dashboard), at a fixed rate from one thread,
through the cache's real read path (CacheService.get_or_load: single-flight lease, stale
serving, XFetch). Every read that runs the loader went to the database on the request path:
that is a *miss* here (an absent key, or a stale one the reader refreshed). Both runs start
with the first warm-up (tasks.warming.warm_critical) and the same seed; "on" runs
tasks.refresh.refresh_once every ``interval`` seconds in a process of its own (as the beat
job runs on a worker, not in the readers' process), its lead in the defaults' ratio to the
interval (90 s ahead, every 30 s).

Nothing shared is touched: a redis-server started for the run (maxmemory-policy ``--policy``:
production's volatile-lfu by default, so the job reads OBJECT FREQ; ``noeviction`` makes it
read OBJECT IDLETIME) and a throwaway PostgreSQL database.

JSON fields (scripts read them: add, never rename or drop): ``config``, ``on`` and ``off``
(each: reads, misses, hot_keys, hot_reads, hot_misses, aggregate_reads, aggregate_misses,
read_queries, refresh_queries, warmup_queries, queries, refreshed, misses_avoided, runs,
signal, elapsed, hot_miss_rate), ``ratios`` (hot_misses_on_over_off, queries_on_over_off,
misses_on_over_off).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench._pg import throwaway
from cache import CacheService, DataType, build_cache
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Kind, Warm
from cachectl.embedded import start_embedded_redis
from config import Settings, load_settings
from db import make_engine
from tasks.refresh import RefreshConfig, refresh_once
from tasks.sources import SqlSource
from tasks.warming import warm_critical
from workers import routing

HOT_FRACTION = 0.01
AGGREGATE_SHARE = 0.05
# The lead in job intervals, as the defaults have it (90 s ahead, every 30 s).
LEAD_INTERVALS: Final = (
    Settings.model_fields["cache_refresh_lead_s"].default / routing.REFRESH_SECONDS
)
# The job tracks this many times the hot 1% (cache_refresh_hot_size; production's default,
# 1,000, is the hot 1% of 100,000 members and more).
HOT_SET_FACTOR = 5


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Outcome:
    reads: int = 0
    misses: int = 0
    hot_keys: int = 0
    hot_reads: int = 0
    hot_misses: int = 0
    aggregate_reads: int = 0
    aggregate_misses: int = 0
    read_queries: int = 0
    refresh_queries: int = 0
    warmup_queries: int = 0
    refreshed: int = 0
    misses_avoided: int = 0
    runs: int = 0
    signal: str = ""
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reads": self.reads,
            "misses": self.misses,
            "hot_keys": self.hot_keys,
            "hot_reads": self.hot_reads,
            "hot_misses": self.hot_misses,
            "aggregate_reads": self.aggregate_reads,
            "aggregate_misses": self.aggregate_misses,
            "read_queries": self.read_queries,
            "refresh_queries": self.refresh_queries,
            "warmup_queries": self.warmup_queries,
            "queries": self.read_queries + self.refresh_queries + self.warmup_queries,
            "refreshed": self.refreshed,
            "misses_avoided": self.misses_avoided,
            "runs": self.runs,
            "signal": self.signal,
            "elapsed": self.elapsed,
            "hot_miss_rate": round(self.hot_misses / self.hot_reads, 5) if self.hot_reads else 0,
        }


class CountingSource(SqlSource):
    """The warm-up's source, counting the queries it issues (one per call)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queries = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.queries += 1

    def load(self, kind: Kind, params: Sequence[Any] = ()) -> Any:
        self._count()
        return super().load(kind, params)

    def hottest_member_ids(self, limit: int) -> list[int]:
        self._count()
        return super().hottest_member_ids(limit)

    def members(self, ids: Any) -> dict[int, Any]:
        self._count()
        return super().members(ids)


def _settings(port: int, prefix: str, ttl: int) -> Settings:
    ttls = {f"cache_{name}_ttl": ttl for name in ("member", "analytics", "statistics", "lookup")}
    return load_settings(
        redis_host="127.0.0.1",
        redis_port=port,
        redis_key_prefix=prefix,
        redis_socket_timeout=2.0,
        redis_connect_timeout=2.0,
        _env_file=None,
        **ttls,
    )


def _ranked_ids(source: SqlSource, members: int) -> list[int]:
    """Every member id, the warm-up's hottest first (the Zipf ranks map onto this order)."""
    hottest = source.hottest_member_ids(members)
    rest = [i for i in range(1, members + 1) if i not in set(hottest)]
    return hottest + rest


def _aggregate_keys(cache: CacheService) -> list[tuple[str, Kind, tuple[Any, ...]]]:
    found = []
    for kind in KINDS.warmed(Warm.CRITICAL):
        gens = generations_sync(cache, kind.tags) or ()
        found += [(key, kind, p) for key, p in kind.variant_keys(cache.keys, gens).items()]
    return found


def refresh_process(
    url: str,
    port: int,
    prefix: str,
    ttl: int,
    config: RefreshConfig,
    stop: Any,
    answers: Any,
) -> None:
    """The beat job's work, in a process of its own as on a worker: "ready" on ``answers``,
    then refresh_once every ``config.interval_s`` until ``stop``; its totals on ``answers``."""
    cache = build_cache(_settings(port, prefix, ttl))
    engine = make_engine(url)
    source = CountingSource(engine)
    totals: dict[str, Any] = {
        "runs": 0, "refreshed": 0, "misses_avoided": 0, "signal": "", "errors": []
    }  # fmt: skip
    answers.put("ready")
    try:
        while True:
            try:
                report = refresh_once(cache, source, cache.clients.writer, config)
            except Exception as exc:  # reported; the next tick goes on, as on a worker
                totals["errors"].append(f"{type(exc).__name__}: {exc}")
                continue
            totals["runs"] += 1
            totals["refreshed"] += report.refreshed
            totals["misses_avoided"] += report.misses_avoided
            totals["signal"] = report.signal or totals["signal"]
            if stop.wait(config.interval_s):
                break
    finally:
        answers.put(totals | {"queries": source.queries})
        cache.close()
        engine.dispose()


def run_once(
    args: argparse.Namespace, url: str, port: int, refresh: bool, ranked: list[int]
) -> Outcome:
    prefix = f"bench-refresh-{'on' if refresh else 'off'}:"
    settings = _settings(port, prefix, args.ttl)
    engine = make_engine(url)
    cache = build_cache(settings)
    readers, warmer = CountingSource(engine), CountingSource(engine)
    outcome = Outcome()
    hot_count = max(1, int(len(ranked) * HOT_FRACTION))
    outcome.hot_keys = hot_count + len(_aggregate_keys(cache))
    warm_critical(cache, warmer, hottest=hot_count)
    outcome.warmup_queries = warmer.queries
    aggregates = _aggregate_keys(cache)
    config = RefreshConfig(
        lead_s=LEAD_INTERVALS * args.interval,
        hot_size=hot_count * HOT_SET_FACTOR,
        scan_budget=args.members,
        interval_s=args.interval,
    )
    spawn = multiprocessing.get_context("spawn")
    stop, answers = spawn.Event(), spawn.Queue()
    job = spawn.Process(
        target=refresh_process,
        args=(url, port, prefix, args.ttl, config, stop, answers),
        name="refresh-ahead",
        daemon=True,
    )
    if refresh:
        job.start()
        if answers.get(timeout=60) != "ready":
            raise RuntimeError("the refresh process did not start")
    rng = random.Random(args.seed)
    weights = [1.0 / rank for rank in range(1, len(ranked) + 1)]
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    hot_ids = set(ranked[:hot_count])
    started = time.monotonic()
    period = 1.0 / args.rate
    try:
        # The same reads in both runs (same seed, same count), paced at ``rate``; a run that
        # falls behind takes longer rather than reading less.
        for n in range(1, int(args.seconds * args.rate) + 1):
            wait = started + n * period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            loaded = [False]
            if rng.random() < AGGREGATE_SHARE:
                key, kind, params = rng.choice(aggregates)

                def load_aggregate(
                    kind: Kind = kind, params: Any = params, loaded: list[bool] = loaded
                ) -> Any:
                    loaded[0] = True
                    return readers.load(kind, params)

                cache.get_or_load(key, load_aggregate, kind.data_type)
                outcome.aggregate_reads += 1
                outcome.aggregate_misses += loaded[0]
            else:
                member_id = ranked[rng.choices(range(len(ranked)), cum_weights=cum)[0]]

                def load_member(member_id: int = member_id, loaded: list[bool] = loaded) -> Any:
                    loaded[0] = True
                    return readers.members([member_id]).get(member_id)

                cache.get_or_load(
                    cache.keys.member(member_id), load_member, DataType.MEMBER, version_of=_version
                )
                if member_id in hot_ids:
                    outcome.hot_reads += 1
                    outcome.hot_misses += loaded[0]
            outcome.reads += 1
            outcome.misses += loaded[0]
    finally:
        outcome.elapsed = round(time.monotonic() - started, 1)
        stop.set()
        if refresh:
            job_outcome = answers.get(timeout=60)
            job.join(10)
            for name in ("runs", "refreshed", "misses_avoided", "signal", "errors"):
                setattr(outcome, name, job_outcome[name])
            outcome.refresh_queries = job_outcome["queries"]
        outcome.read_queries = readers.queries
        for key in ("hot", "cursor"):
            cache.clients.writer.delete(cache.keys.system("refresh", key))
        cache.close()
        engine.dispose()
    outcome.hot_reads += outcome.aggregate_reads
    outcome.hot_misses += outcome.aggregate_misses
    if outcome.errors:
        _log(f"refresh errors ({len(outcome.errors)}): {outcome.errors[:3]}")
    return outcome


def _version(member: Any) -> int:
    """As the API's read path: a member record is filled with its row's version."""
    return int(member["version"]) if isinstance(member, dict) else 0


def _ratio(on: float, off: float) -> float | None:
    return round(on / off, 4) if off else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    redis = start_embedded_redis(directory)
    try:
        client = build_cache(_settings(redis.port, "bench-probe:", args.ttl)).clients.writer
        client.config_set("maxmemory-policy", args.policy)
        client.close()
        _log(f"seeding {args.members:,} members")
        with throwaway(args.members) as db:
            engine = make_engine(db.url)
            ranked = _ranked_ids(SqlSource(engine), db.members)
            engine.dispose()
            results = {}
            for refresh in (False, True):
                label = "on" if refresh else "off"
                _log(f"refresh-ahead {label}: {args.seconds:.0f} s at {args.rate}/s")
                results[label] = run_once(args, db.url, redis.port, refresh, ranked).as_dict()
    finally:
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)
    on, off = results["on"], results["off"]
    return {
        "config": {
            "members": args.members,
            "seconds": args.seconds,
            "ttl": args.ttl,
            "stale_ratio": 0.5,
            "rate": args.rate,
            "interval": args.interval,
            "lead": LEAD_INTERVALS * args.interval,
            "policy": args.policy,
            "hot_fraction": HOT_FRACTION,
            "hot_set_size": max(1, int(args.members * HOT_FRACTION)) * HOT_SET_FACTOR,
            "expiries": round(args.seconds / args.ttl, 1),
        },
        "on": on,
        "off": off,
        "ratios": {
            "hot_misses_on_over_off": _ratio(on["hot_misses"], off["hot_misses"]),
            "misses_on_over_off": _ratio(on["misses"], off["misses"]),
            "queries_on_over_off": _ratio(on["queries"], off["queries"]),
        },
    }


def render(result: dict[str, Any]) -> str:
    c, on, off, r = result["config"], result["on"], result["off"], result["ratios"]
    rows = [
        ("reads", "reads"),
        ("hot keys (1% of members + aggregates)", "hot_keys"),
        ("hot reads", "hot_reads"),
        ("hot misses", "hot_misses"),
        ("  of which aggregates", "aggregate_misses"),
        ("all misses", "misses"),
        ("db queries: read path", "read_queries"),
        ("db queries: refresh-ahead", "refresh_queries"),
        ("db queries: first warm-up", "warmup_queries"),
        ("db queries: total", "queries"),
        ("entries refreshed", "refreshed"),
        ("refresh runs", "runs"),
        ("seconds taken", "elapsed"),
    ]
    lines = [
        f"refresh-ahead: {c['members']:,} members, TTL {c['ttl']} s (stale +50%), "
        f"{c['seconds']:.0f} s = {c['expiries']} TTLs, {c['rate']} reads/s, "
        f"job every {c['interval']} s (lead {c['lead']} s), policy {c['policy']}, "
        f"signal {on['signal'] or '-'}",
        f"{'':40} {'this project':>14} {'refresh off':>14}",
    ]
    lines += [f"{label:40} {on[key]:>14,} {off[key]:>14,}" for label, key in rows]
    lines.append(
        f"ratios on/off: hot misses {r['hot_misses_on_over_off']}, "
        f"all misses {r['misses_on_over_off']}, db queries {r['queries_on_over_off']}"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.refresh", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--ttl", type=int, default=6, help="every data type's TTL, seconds")
    parser.add_argument("--rate", type=int, default=1_500, help="reads per second")
    parser.add_argument("--interval", type=float, default=1.0, help="refresh job interval, s")
    parser.add_argument("--policy", default="volatile-lfu", help="maxmemory-policy")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    result = run(args)
    out(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
