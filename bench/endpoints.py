"""The cached API beside its uncached self, the floor and fastapi-cache, over HTTP.

    python -m bench.endpoints [--json] [--members 200000] [--seconds 5] [--rounds 3]

A throwaway PostgreSQL database is seeded with ``--members`` members (about three payments
each) and dropped afterwards. Five uvicorn processes (one worker each, the same settings):
the API with CACHE_ENABLED=false, the API cached, the floor (bench.floor: the stored bytes
straight from Redis with redis.asyncio), the same floor on the project's pipelined reader, and
fastapi-cache on the member route (bench._peer). wrk drives them:

- per route (member lookup, analytics dashboard, demographics, lookups): median and p99
  latency on one connection and requests/s on 50, uncached and cached (entries filled first);
- the member route of the floors, the API (with its near tier, as it ships, and without it),
  fastapi-cache and the ceiling (bench.ceiling: constant bytes, no Redis), in ``--rounds``
  interleaved rounds (medians): latency on one connection, requests/s on 50;
- bench._zipf: Zipf(1.0) reads with 5% writes over every member, without then with the cache,
  counting the database's transactions in pg_stat_database.

Redis keys live in database 14 under ``bench:endpoints:<random>:`` and are removed at the end.
Missed targets are reported, not signalled: the exit status is 0 unless something failed.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Final

import httpx
from fastapi import FastAPI

from api_stub import create_app
from bench._common import BENCH_DB, clear_prefix
from bench._http import (
    HOST,
    BenchError,
    Server,
    WrkResult,
    fixed_paths,
    require_wrk,
    wrk,
)
from bench._pg import Seeded, quiet, throwaway
from bench._zipf import zipf
from config import load_settings

MEMBER_IDS: Final = 2_000  # distinct members the latency runs draw from
NOT_A_ROUTE: Final = "/bench-ready"  # readiness probe: 404 without touching the database
MEMBER_PATH: Final = "/api/v1/members/"
EXPECTED: Final = {  # the seed design's expected gains, percent faster
    "member": "60-80%",
    "analytics": "80-95%",
    "statistics": "70-90%",
    "lookups": "-",
}
TARGETS: Final = {
    "analytics_faster_pct": 99.0,
    "statistics_faster_pct": 98.0,
    "member_p50_vs_floor_max": 1.25,
    "member_rps_vs_fastapi_cache_min": 2.0,
    "db_queries_fewer_pct": 95.0,
    "member_near_rps_vs_floor_direct_min": 1.3,
    "member_near_p50_vs_floor_direct_max": 1.0,
}


def api_app() -> FastAPI:
    """uvicorn factory for the API: settings from the environment."""
    return create_app(load_settings())


@dataclass(frozen=True)
class Options:
    members: int = 200_000
    seconds: float = 5.0
    zipf_seconds: float = 10.0
    rounds: int = 3
    json: bool = False


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.endpoints", description=__doc__)
    parser.add_argument("--members", type=int, default=200_000, help="members to seed")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--zipf-seconds", type=float, default=10.0, help="seconds per Zipf run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the member references")
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    ns = parser.parse_args(argv)
    if ns.members < MEMBER_IDS or ns.seconds < 1 or ns.zipf_seconds < 1 or ns.rounds < 1:
        parser.error(f"--members >= {MEMBER_IDS}, --seconds/--zipf-seconds >= 1, --rounds >= 1")
    return Options(ns.members, ns.seconds, ns.zipf_seconds, ns.rounds, ns.json)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- routes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    name: str
    label: str
    paths: tuple[str, ...]


def routes(member_ids: Sequence[int]) -> list[Route]:
    return [
        Route("member", "member lookup", tuple(f"{MEMBER_PATH}{i}" for i in member_ids)),
        Route("analytics", "analytics dashboard", ("/api/v1/analytics/dashboard",)),
        Route("statistics", "demographics", ("/api/v1/statistics/demographics",)),
        Route(
            "lookups",
            "lookups",
            tuple(f"/api/v1/lookups/{name}" for name in ("tiers", "statuses", "countries")),
        ),
    ]


def prime(server: Server, paths: Sequence[str]) -> None:
    """GET every path once, so the entries are cached before a run (each must answer 200)."""
    with httpx.Client(base_url=server.base, timeout=60.0) as client:
        for path in paths:
            answer = client.get(path)
            if answer.status_code != 200:
                raise BenchError(f"{server.name} {path}: {answer.status_code} {answer.text[:200]}")


def measure(server: Server, paths: Sequence[str], seconds: float, dsn: str) -> dict[str, WrkResult]:
    """One connection, then 50; each run starts once the database has drained the last."""
    script = fixed_paths(paths)
    quiet(dsn)
    one = wrk(server.base, script, connections=1, seconds=seconds)
    many = wrk(server.base, script, connections=50, seconds=seconds)
    quiet(dsn)
    for result in (one, many):
        if result.errors:
            raise BenchError(f"{server.name}: {result.errors} failed requests")
    return {"c1": one, "c50": many}


def faster_pct(uncached: float, cached: float) -> float:
    return (1 - cached / uncached) * 100 if uncached else 0.0


def route_figures(
    route: Route, uncached: Server, cached: Server, seconds: float, dsn: str
) -> dict[str, Any]:
    _log(f"{route.label}: uncached")
    cold = measure(uncached, route.paths, seconds, dsn)
    _log(f"{route.label}: cached")
    prime(cached, route.paths)
    warm = measure(cached, route.paths, seconds, dsn)
    return {
        "label": route.label,
        "uncached": {"c1": cold["c1"].as_dict(), "c50": cold["c50"].as_dict()},
        "cached": {"c1": warm["c1"].as_dict(), "c50": warm["c50"].as_dict()},
        "faster_pct": round(faster_pct(cold["c1"].p50_ms, warm["c1"].p50_ms), 1),
        "rps_gain": round(warm["c50"].rps / cold["c50"].rps, 1) if cold["c50"].rps else None,
        "expected": EXPECTED[route.name],
    }


# --- member route references -----------------------------------------------------------------
def references(
    contenders: dict[str, Server], paths: Sequence[str], seconds: float, rounds: int, dsn: str
) -> dict[str, Any]:
    """Interleaved rounds (the order rotates), so machine noise lands on all alike."""
    # The floors serve what the API stored: prime them last.
    for name in sorted(contenders, key=lambda name: name.startswith("floor")):
        prime(contenders[name], paths)
    runs: dict[str, list[dict[str, WrkResult]]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_no in range(rounds):
        _log(f"member references: round {round_no + 1}/{rounds}")
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(measure(contenders[name], paths, seconds, dsn))
    out: dict[str, Any] = {}
    for name, results in runs.items():
        out[name] = {
            "p50_ms": round(statistics.median(r["c1"].p50_ms for r in results), 3),
            "p99_ms": round(statistics.median(r["c1"].p99_ms for r in results), 3),
            "rps_c50": round(statistics.median(r["c50"].rps for r in results), 1),
        }
    return out


# --- the run ---------------------------------------------------------------------------------
def run(options: Options) -> dict[str, Any]:
    require_wrk()
    _log(f"seeding {options.members:,} members")
    with throwaway(options.members) as db:
        prefix = f"bench:endpoints:{secrets.token_hex(4)}:"
        env = {
            "DATABASE_URL": db.url,
            "REDIS_HOST": HOST,
            "REDIS_PORT": "6379",
            "REDIS_DB": str(BENCH_DB),
            "REDIS_KEY_PREFIX": prefix,
        }
        member_ids = random.Random(11).sample(range(1, db.members + 1), MEMBER_IDS)
        try:
            result = _measure_all(options, db, env, member_ids)
        finally:
            clear_prefix(prefix)
    return result


def _measure_all(
    options: Options, db: Seeded, env: dict[str, str], member_ids: list[int]
) -> dict[str, Any]:
    api = "bench.endpoints:api_app"
    result: dict[str, Any] = {
        "database": {
            "members": db.members,
            "payments": db.payments,
            "size_mb": round(db.size_mb, 1),
            "seed_seconds": round(db.seconds, 1),
        },
        "setup": {
            "server": "uvicorn, 1 worker, uvloop + httptools, no access log",
            "load": "wrk 1 thread",
            "seconds_per_run": options.seconds,
            "member_ids": MEMBER_IDS,
        },
    }
    with ExitStack() as stack:
        uncached = stack.enter_context(
            Server("uncached", api, env | {"CACHE_ENABLED": "false"}, ready=NOT_A_ROUTE)
        )
        cached = stack.enter_context(Server("cached", api, env, ready=NOT_A_ROUTE))
        floor = stack.enter_context(Server("floor", "bench.floor:create", env, ready=NOT_A_ROUTE))
        floor_direct = stack.enter_context(
            Server("floor-direct", "bench.floor:create_direct", env, ready=NOT_A_ROUTE)
        )
        peer = stack.enter_context(
            Server("fastapi-cache", "bench._peer:create", env, ready=NOT_A_ROUTE)
        )
        # The near tier's references: the API without it (Redis on every hit), and the
        # ceiling (constant bytes, no Redis: what uvicorn and wrk cost by themselves).
        no_near = stack.enter_context(
            Server("no-near", api, env | {"CACHE_NEAR_ENABLED": "false"}, ready=NOT_A_ROUTE)
        )
        ceiling = stack.enter_context(
            Server("ceiling", "bench.ceiling:create", env, ready=NOT_A_ROUTE)
        )
        all_routes = routes(member_ids)
        result["routes"] = {
            route.name: route_figures(route, uncached, cached, options.seconds, db.dsn)
            for route in all_routes
        }
        contenders = {
            "floor": floor,
            "floor_direct": floor_direct,
            "api_cached": cached,
            "fastapi_cache": peer,
            "api_no_near": no_near,
            "ceiling": ceiling,
        }
        result["member_references"] = references(
            contenders, all_routes[0].paths, options.seconds, options.rounds, db.dsn
        )
    result["zipf"] = zipf(env, db, options.zipf_seconds, NOT_A_ROUTE)
    result["targets"] = verdict(result)
    return result


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    refs, routes_ = result["member_references"], result["routes"]
    vs_floor = refs["api_cached"]["p50_ms"] / refs["floor"]["p50_ms"]
    vs_peer = refs["api_cached"]["rps_c50"] / refs["fastapi_cache"]["rps_c50"]
    checks = {
        "analytics_faster_pct": (routes_["analytics"]["faster_pct"], ">="),
        "statistics_faster_pct": (routes_["statistics"]["faster_pct"], ">="),
        "member_p50_vs_floor_max": (round(vs_floor, 2), "<="),
        "member_rps_vs_fastapi_cache_min": (round(vs_peer, 2), ">="),
        "db_queries_fewer_pct": (result["zipf"]["queries_fewer_pct"], ">="),
        # The cached API serves member hits from its near tier (CACHE_NEAR_ENABLED default).
        "member_near_rps_vs_floor_direct_min": (
            round(refs["api_cached"]["rps_c50"] / refs["floor_direct"]["rps_c50"], 2),
            ">=",
        ),
        "member_near_p50_vs_floor_direct_max": (
            round(refs["api_cached"]["p50_ms"] / refs["floor_direct"]["p50_ms"], 2),
            "<=",
        ),
    }
    out: dict[str, Any] = {}
    for name, (value, way) in checks.items():
        target = TARGETS[name]
        met = value >= target if way == ">=" else value <= target
        out[name] = {"value": value, "target": f"{way} {target:g}", "met": met}
    return out


# --- report ----------------------------------------------------------------------------------
def report(result: dict[str, Any]) -> str:
    db, setup = result["database"], result["setup"]
    lines = [
        f"bench.endpoints: PostgreSQL {db['members']:,} members, {db['payments']:,} payments"
        f" ({db['size_mb']:.0f} MB); {setup['server']}; {setup['load']},"
        f" {setup['seconds_per_run']:g} s per run",
        f"{'route':<20}{'uncached p50/p99 ms':>21}{'cached p50/p99 ms':>19}"
        f"{'faster':>8}{'expected':>10}{'rps@50 uncached':>17}{'cached':>9}",
    ]
    for figures in result["routes"].values():
        cold, warm = figures["uncached"], figures["cached"]
        lines.append(
            f"{figures['label']:<20}"
            f"{cold['c1']['p50_ms']:>12.2f} /{cold['c1']['p99_ms']:>7.2f}"
            f"{warm['c1']['p50_ms']:>11.3f} /{warm['c1']['p99_ms']:>6.2f}"
            f"{figures['faster_pct']:>7.1f}%{figures['expected']:>10}"
            f"{_rps(cold['c50']['rps']):>17}{_rps(warm['c50']['rps']):>9}"
        )
    refs = result["member_references"]
    floor = refs["floor"]
    lines.append(f"member route, median of {result['setup'].get('rounds', 3)} interleaved rounds:")
    labels = {
        "floor": "floor (redis.asyncio GET)",
        "floor_direct": "floor, pipelined GET (ref)",
        "api_cached": "this API, cached (near tier)",
        "fastapi_cache": "fastapi-cache (Redis)",
        "api_no_near": "this API, cached, no near tier",
        "ceiling": "ceiling: constant bytes (ref)",
    }
    for name, label in labels.items():
        if name not in refs:
            continue
        ref = refs[name]
        lines.append(
            f"  {label:<30} p50 {ref['p50_ms']:.3f} ms ({ref['p50_ms'] / floor['p50_ms']:.2f}x"
            f" floor)  p99 {ref['p99_ms']:.3f} ms  {ref['rps_c50']:>7,.0f} req/s at 50"
        )
    z = result["zipf"]
    lines.append(
        f"Zipf({z['exponent']:.1f}) over {db['members']:,} members, {z['write_share']:.0%} writes,"
        f" 50 connections; queries = {z['counted_by']}:"
    )
    for name in ("uncached", "cached"):
        run_ = z[name]
        lines.append(
            f"  {name:<9}{run_['requests']:>9,} requests {run_['rps']:>8,.0f} req/s"
            f"  reads {run_['read_transactions']:>8,}  writes {run_['write_transactions']:>6,}"
            f"  queries/1k requests {run_['queries_per_1k_requests']:>7.1f}"
        )
    lines.append(
        f"  database queries {z['queries_fewer_pct']:.1f}% fewer (at most"
        f" {z['fewer_pct_bound_by_writes']:.1f}%: the writes reach it), read queries"
        f" {z['read_queries_fewer_pct']:.1f}% fewer; expected {z['expected']}"
    )
    lines.append(
        "targets: "
        + "; ".join(
            f"{name} {check['value']:g} {check['target']} {'met' if check['met'] else 'MISSED'}"
            for name, check in result["targets"].items()
        )
    )
    return "\n".join(lines)


def _rps(value: float) -> str:
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.monotonic()
    try:
        result = run(options)
    except BenchError as exc:
        print(f"bench.endpoints: {exc}", file=sys.stderr)
        return 1
    result["setup"]["rounds"] = options.rounds
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result) if options.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
