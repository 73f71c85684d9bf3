"""Cache hot path: this project's get/get_many beside redis-py, dogpile.cache and cashews.

    python -m bench.hotpath [--rounds 5] [--seconds 1.5] [--json] [--diagnose]

One process, one thread, one Redis connection per contender (cashews in its own asyncio
loop), all on database 14 under ``bench:hotpath:``. Every contender reads the same 1.7 KB
member record, stored beforehand through its own library: the project with
``CacheService.set`` (its envelope), dogpile.cache and cashews with their default pickle. The
redis-py GET floor and the MGET floor read the project's own keys, so the bytes on the wire
are the same and the gap is the project's own overhead.

Contenders run interleaved (see bench._common); the figure of a contender is its median round,
a ratio is the median of its per-round ratios (both sides measured in the same round). Keys are
written with a TTL and deleted at the end. The exit status is 0 unless something failed;
missed targets are reported, not signalled.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import pickle
import platform
import sys
import time
import timeit
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from cashews import Cache as CashewsCache
from cashews.backends.redis import Redis as CashewsRedisBackend
from dogpile.cache import CacheRegion, make_region
from dogpile.cache.api import NO_VALUE
from rich.console import Console
from rich.table import Table

from bench import _near
from bench._common import (
    BENCH_DB,
    Contender,
    measure_interleaved,
    member_record,
    paired_ratio,
    spread,
)
from cache import CacheService, DataType, build_cache
from cache.codec import HEADER_SIZE
from config import Settings, load_settings
from config.settings import ConfigError

DEFAULT_PREFIX = "bench:hotpath:"
MANY = 100  # keys per get_many / MGET
TTL_SECONDS = 600  # every key expires even if the clean-up never runs
HIT_TARGET = 0.9  # project get >= 0.9x redis-py GET
MANY_TARGET = 2.0  # project get_many per key within 2x of MGET per key

FLOOR = "redis_get"
MGET = "redis_mget"
LABELS = {
    "redis_get": "redis-py GET, 1 connection (floor)",
    "redis_get_pool": "redis-py GET via its default pool (ref)",
    "project_get": "CacheService.get, MEMBER hit",
    "dogpile_get": "dogpile.cache region.get (pickle)",
    "cashews_get": "cashews cache.get (async, pickle)",
    "project_get_pinned": "CacheService.get, pinned connection (diag)",
    "project_near_get": "CacheService.get, near tier hit (tracking live)",
    "redispy_csc_get": "redis-py client-side cache GET (RESP3, CacheConfig)",
    "cashews_csc_get": "cashews cache.get, client_side=True",
    "redis_mget": f"redis-py MGET {MANY} keys, per key",
    "redis_mget_json": f"redis-py MGET {MANY} + orjson.loads, per key (ref)",
    "project_get_many": f"CacheService.get_many {MANY}, per key",
}


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to measure."""


@dataclass(frozen=True)
class Options:
    rounds: int = 5
    seconds: float = 1.5
    slices: int = 15
    host: str | None = None
    port: int | None = None
    prefix: str = DEFAULT_PREFIX
    json: bool = False
    diagnose: bool = False


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hotpath", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per contender (median kept)")
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="seconds per contender per round"
    )
    parser.add_argument("--slices", type=int, default=15, help="interleaved slices per round")
    parser.add_argument("--host", help="Redis host (default: REDIS_HOST / settings)")
    parser.add_argument("--port", type=int, help="Redis port (default: REDIS_PORT / settings)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix, under bench:hotpath:")
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument(
        "--diagnose", action="store_true", help="also measure where the project's get spends time"
    )
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.seconds <= 0 or ns.slices < 1:
        parser.error("--rounds and --slices must be >= 1, --seconds > 0")
    if not ns.prefix.startswith(DEFAULT_PREFIX):
        parser.error(f"--prefix must start with {DEFAULT_PREFIX!r}")
    return Options(
        rounds=ns.rounds,
        seconds=ns.seconds,
        slices=ns.slices,
        host=ns.host,
        port=ns.port,
        prefix=ns.prefix,
        json=ns.json,
        diagnose=ns.diagnose,
    )


def bench_settings(options: Options) -> Settings:
    """The project's settings as configured (env, .env), pinned to one standalone server."""
    overrides: dict[str, object] = {
        "redis_db": BENCH_DB,
        "redis_key_prefix": options.prefix,
        "redis_url": None,
        "redis_sentinels": "",
        "redis_cluster_nodes": "",
    }
    if options.host is not None:
        overrides["redis_host"] = options.host
    if options.port is not None:
        overrides["redis_port"] = options.port
    return load_settings(**overrides)


def connection_count(pool: Any) -> int:
    """Connections a redis-py pool (sync or asyncio) has opened; -1 when it cannot tell."""
    made = getattr(pool, "_connections", None)
    if isinstance(made, list):
        return sum(1 for conn in made if conn is not None)
    free = getattr(pool, "_available_connections", None)
    used = getattr(pool, "_in_use_connections", None)
    if free is not None and used is not None:
        return len(free) + len(used)
    return -1


def _loop(call: Callable[[str], object], key: str) -> Callable[[int], float]:
    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            call(key)
        return time.perf_counter() - started

    return batch


def _service_loop(service: CacheService, key: str) -> Callable[[int], float]:
    get, data_type = service.get, DataType.MEMBER

    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            get(key, data_type)
        return time.perf_counter() - started

    return batch


def _service_many_loop(service: CacheService, keys: list[str]) -> Callable[[int], float]:
    get_many, data_type = service.get_many, DataType.MEMBER

    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            get_many(keys, data_type)
        return time.perf_counter() - started

    return batch


def _mget_loop(client: redis.Redis, keys: list[str]) -> Callable[[int], float]:
    mget = client.mget

    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            mget(keys)
        return time.perf_counter() - started

    return batch


def _mget_json_loop(client: redis.Redis, keys: list[str]) -> Callable[[int], float]:
    """MGET plus orjson.loads of each body: the floor of any cache that stores JSON."""
    mget: Callable[[list[str]], Any] = client.mget
    loads, header = orjson.loads, HEADER_SIZE

    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            [loads(raw[header:]) for raw in mget(keys)]
        return time.perf_counter() - started

    return batch


def _cashews_loop(runner: asyncio.Runner, cache: CashewsCache, key: str) -> Callable[[int], float]:
    async def timed(n: int) -> float:
        get = cache.get
        started = time.perf_counter()
        for _ in range(n):
            await get(key)
        return time.perf_counter() - started

    def batch(n: int) -> float:
        return runner.run(timed(n))

    return batch


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("redis", "hiredis", "dogpile.cache", "cashews", "orjson"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _micro_us(call: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def run(options: Options) -> dict[str, Any]:
    """Set up every contender, measure them interleaved, clean up; the figures as a dict."""
    settings = bench_settings(options)
    host, port = settings.redis_host, settings.redis_port
    password = settings.redis_password.get_secret_value() or None
    username = settings.redis_username
    record = member_record(0)
    records = {i: member_record(i) for i in range(1, MANY + 1)}
    written: list[str] = []
    connections: dict[str, int] = {}
    diagnostics: dict[str, Any] = {}
    unavailable: dict[str, str] = {}  # contenders that cannot run here, and why

    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        # --- the floor: one connection, hiredis -----------------------------------------------
        floor = redis.Redis(
            host=host, port=port, db=BENCH_DB, username=username, password=password,
            single_connection_client=True,
        )  # fmt: skip
        stack.callback(floor.close)
        stack.callback(_cleanup, floor, written)  # LIFO: runs before floor.close
        _require(bool(redis.utils.HIREDIS_AVAILABLE), "hiredis is not installed")
        _require(bool(floor.ping()), f"Redis at {host}:{port} did not answer PING")

        # --- the project, configured as it ships -----------------------------------------------
        service = build_cache(settings)
        stack.callback(service.close)
        key = service.keys.member(0)
        many_keys = service.keys.members(records)
        written += [key, *many_keys]
        _require(service.set(key, record, DataType.MEMBER), "CacheService.set failed")
        _require(
            service.set_many(dict(zip(many_keys, records.values(), strict=True)), DataType.MEMBER),
            "CacheService.set_many failed",
        )
        _require(service.get(key, DataType.MEMBER) == record, "CacheService.get missed the record")
        _require(
            service.get_many(many_keys, DataType.MEMBER) == list(records.values()),
            "CacheService.get_many missed records",
        )
        envelope = floor.get(key)
        _require(isinstance(envelope, bytes), "GET of the project's key returned nothing")
        assert isinstance(envelope, bytes)
        _require(all(v is not None for v in floor.mget(many_keys)), "MGET missed keys")

        pooled = redis.Redis(
            host=host, port=port, db=BENCH_DB, username=username, password=password
        )
        stack.callback(pooled.close)

        # --- dogpile.cache: redis backend, default pickle, no local layer ----------------------
        dogpile_key = f"{options.prefix}dogpile:member:0"
        written.append(dogpile_key)
        region: CacheRegion = make_region().configure(
            "dogpile.cache.redis",
            arguments={
                "host": host, "port": port, "db": BENCH_DB, "username": username,
                "password": password,
            },
        )  # fmt: skip
        dogpile_client: Any = getattr(region.backend, "writer_client", None)
        _require(dogpile_client is not None, "dogpile.cache.redis backend has no writer_client")
        stack.callback(dogpile_client.close)
        region.set(dogpile_key, record)
        floor.delete(dogpile_key)
        _require(region.get(dogpile_key) is NO_VALUE, "dogpile served a deleted key locally")
        region.set(dogpile_key, record)
        # TTL set aside: dogpile's redis_expiration_time calls the deprecated SETEX of redis-py.
        floor.expire(dogpile_key, TTL_SECONDS)
        _require(region.get(dogpile_key) == record, "dogpile region.get missed the record")

        # --- cashews: async only, its own loop, plain Redis backend (no client-side cache) -----
        cashews_key = f"{options.prefix}cashews:member:0"
        written.append(cashews_key)
        runner = asyncio.Runner()
        stack.callback(runner.close)
        cashews = CashewsCache(name="bench-hotpath")
        backend = cashews.setup(settings.redis_url_for(), client_side=False)

        async def cashews_close() -> None:
            with warnings.catch_warnings():
                # cashews 7 closes its redis-py client with close(), deprecated in redis-py 5.
                warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
                await cashews.close()

        stack.callback(lambda: runner.run(cashews_close()))
        _require(
            type(backend) is CashewsRedisBackend,
            f"cashews backend is {type(backend).__name__}, not its plain Redis backend",
        )

        async def cashews_set() -> None:
            await cashews.set(cashews_key, record, expire=TTL_SECONDS)

        async def cashews_get() -> Any:
            return await cashews.get(cashews_key)

        runner.run(cashews_set())
        floor.delete(cashews_key)  # behind cashews' back: a local layer would still answer
        _require(runner.run(cashews_get()) is None, "cashews served a deleted key locally")
        runner.run(cashews_set())
        _require(runner.run(cashews_get()) == record, "cashews cache.get missed the record")
        cashews_raw = floor.get(cashews_key)
        _require(isinstance(cashews_raw, bytes), "cashews did not store the record in Redis")

        # --- client-side caches: the project's near tier, redis-py's, cashews' ---------------
        near_service, tracker = _near.near_service(settings)
        stack.callback(near_service.close)
        stack.callback(tracker.stop)
        _near.check_near(near_service, key, record, floor)
        server = str(floor.info("server").get("redis_version", "0"))
        csc_contender: list[Contender] = []
        if _near.redispy_csc_supported(server):
            csc = _near.redispy_csc(host, port, BENCH_DB, password)
            stack.callback(csc.close)
            csc_key = f"{options.prefix}csc:member:0"
            written.append(csc_key)
            csc.set(csc_key, envelope, ex=TTL_SECONDS)
            _require(csc.get(csc_key) == envelope, "redis-py client-side cache missed")
            _near.check_invalidated(
                lambda: csc.get(csc_key), lambda: floor.set(csc_key, b"x", ex=TTL_SECONDS), b"x"
            )
            csc.set(csc_key, envelope, ex=TTL_SECONDS)
            label = LABELS["redispy_csc_get"]
            csc_contender.append(Contender("redispy_csc_get", label, _loop(csc.get, csc_key)))
        else:
            unavailable["redispy_csc_get"] = (
                f"redis-py's client-side cache needs Redis >= 7.4; the server is {server}"
            )
        cs_prefix = f"{options.prefix}cashews_cs:"
        cs_key = "member:0"  # cashews stores it under its client-side prefix
        written.append(cs_prefix + cs_key)
        cashews_cs = _near.CashewsClientSide(settings.redis_url_for(), cs_prefix)
        stack.callback(cashews_cs.close)
        cashews_cs.set(cs_key, record, TTL_SECONDS)
        _require(cashews_cs.get(cs_key) == record, "cashews client-side cache missed")

        contenders = [
            Contender("redis_get", LABELS["redis_get"], _loop(floor.get, key)),
            Contender(
                "project_near_get",
                LABELS["project_near_get"],
                _service_loop(near_service, key),
            ),
            *csc_contender,
            Contender("cashews_csc_get", LABELS["cashews_csc_get"], cashews_cs.loop(cs_key)),
            Contender("redis_get_pool", LABELS["redis_get_pool"], _loop(pooled.get, key)),
            Contender("project_get", LABELS["project_get"], _service_loop(service, key)),
            Contender("dogpile_get", LABELS["dogpile_get"], _loop(region.get, dogpile_key)),
            Contender(
                "cashews_get", LABELS["cashews_get"], _cashews_loop(runner, cashews, cashews_key)
            ),
            Contender("redis_mget", LABELS["redis_mget"], _mget_loop(floor, many_keys), MANY),
            Contender(
                "redis_mget_json",
                LABELS["redis_mget_json"],
                _mget_json_loop(floor, many_keys),
                MANY,
            ),
            Contender(
                "project_get_many",
                LABELS["project_get_many"],
                _service_many_loop(service, many_keys),
                MANY,
            ),
        ]
        if options.diagnose:
            pinned_service = _pinned_service(settings, stack)
            contenders.insert(
                3,
                Contender(
                    "project_get_pinned",
                    LABELS["project_get_pinned"],
                    _service_loop(pinned_service, key),
                ),
            )

        counters = service.metrics.of(DataType.MEMBER)
        before = (counters.hits, counters.misses, counters.stale, counters.errors)
        measure_interleaved(
            contenders,
            rounds=options.rounds,
            seconds=options.seconds,
            slices=options.slices,
            progress=not options.json,
        )
        served = {
            name: now - then
            for name, now, then in zip(
                ("hits", "misses", "stale", "errors"),
                (counters.hits, counters.misses, counters.stale, counters.errors),
                before,
                strict=True,
            )
        }

        connections = {
            "redis_get": connection_count(floor.connection_pool),
            "redis_get_pool": connection_count(pooled.connection_pool),
            "project": connection_count(getattr(service.clients.reader, "connection_pool", None)),
            "dogpile": connection_count(dogpile_client.connection_pool),
            "cashews": connection_count(getattr(getattr(backend, "_client", None),
                                                "connection_pool", None)),
        }  # fmt: skip
        if options.diagnose:
            diagnostics = _diagnose(service, envelope)
        sizes = {
            "json_bytes": len(orjson.dumps(record)),
            "fields": len(record),
            "envelope_bytes": len(envelope),
            "pickle_bytes": len(pickle.dumps(record)),
            "cashews_stored_bytes": len(cashews_raw) if isinstance(cashews_raw, bytes) else 0,
        }

    machine = {
        "cpus": os.cpu_count() or 0,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    report = _report(
        options, settings, contenders, connections, served, sizes, diagnostics, machine
    )
    report["unavailable"] = unavailable
    return report


def _pinned_service(settings: Settings, stack: ExitStack) -> CacheService:
    """The project's core over a single pinned connection (diagnostic, not a shipped config)."""
    from cache import CacheCore
    from cache.client import SyncClients

    client = redis.Redis.from_url(
        settings.redis_url_for(),
        single_connection_client=True,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
    )
    service = CacheService(
        CacheCore.from_settings(settings), SyncClients("standalone", client, client)
    )
    stack.callback(service.close)
    return service


def _diagnose(service: CacheService, envelope: bytes) -> dict[str, Any]:
    """In-process costs of the pieces of a get (microseconds, best of 5)."""
    from cache import codec

    body = envelope[codec.HEADER_SIZE :]
    out: dict[str, Any] = {
        "codec_decode_us": _micro_us(lambda: codec.decode(envelope)),
        "orjson_loads_body_us": _micro_us(lambda: orjson.loads(body)),
    }
    pool: Any = getattr(service.clients.reader, "connection_pool", None)
    if pool is not None:

        def checkout() -> None:
            pool.release(pool.get_connection())

        out["pool_checkout_release_us"] = _micro_us(checkout)
        out["pool_class"] = type(pool).__name__
    return out


def _cleanup(client: redis.Redis, keys: list[str]) -> None:
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])


def _report(
    options: Options,
    settings: Settings,
    contenders: list[Contender],
    connections: dict[str, int],
    served: dict[str, int],
    sizes: dict[str, int],
    diagnostics: dict[str, Any],
    machine: dict[str, Any],
) -> dict[str, Any]:
    by = {c.key: c for c in contenders}
    results: dict[str, Any] = {}
    for c in contenders:
        base = by[MGET] if c.units > 1 else by[FLOOR]
        results[c.key] = {
            "label": c.label,
            "ops_per_s": round(c.median, 1),
            "us_per_op": round(1e6 / c.median, 3),
            "ratio": round(paired_ratio(c, base), 4),
            "ratio_to": base.key,
            "per_key": c.units > 1,
            "spread": round(spread(c), 4),
            "rounds_ops_per_s": [round(r, 1) for r in c.rounds],
        }
    hit = results["project_get"]["ratio"]
    vs_dogpile = paired_ratio(by["project_get"], by["dogpile_get"])
    vs_cashews = paired_ratio(by["project_get"], by["cashews_get"])
    slower = 1 / paired_ratio(by["project_get_many"], by[MGET])
    slower_json = 1 / paired_ratio(by["project_get_many"], by["redis_mget_json"])
    verdict = {
        "hit_vs_redis": round(hit, 4),
        "hit_target": HIT_TARGET,
        "hit_ok": hit >= HIT_TARGET,
        "vs_dogpile": round(vs_dogpile, 4),
        "ahead_of_dogpile": vs_dogpile > 1,
        "vs_cashews": round(vs_cashews, 4),
        "ahead_of_cashews": vs_cashews > 1,
        "get_many_slowdown_vs_mget": round(slower, 4),
        "get_many_target": MANY_TARGET,
        "get_many_ok": slower <= MANY_TARGET,
        "get_many_slowdown_vs_mget_json": round(slower_json, 4),
        "near_vs_redis": results["project_near_get"]["ratio"],
        "near_target": _near.NEAR_TARGET,
        "near_ok": results["project_near_get"]["ratio"] >= _near.NEAR_TARGET,
        "near_vs_redispy_csc": (
            round(paired_ratio(by["project_near_get"], by["redispy_csc_get"]), 4)
            if "redispy_csc_get" in by
            else None
        ),
        "near_vs_cashews_csc": round(
            paired_ratio(by["project_near_get"], by["cashews_csc_get"]), 4
        ),
    }
    return {
        "benchmark": "bench.hotpath",
        "config": {
            "rounds": options.rounds,
            "seconds": options.seconds,
            "slices": options.slices,
            "host": settings.redis_host,
            "port": settings.redis_port,
            "db": BENCH_DB,
            "prefix": options.prefix,
            "batch_keys": MANY,
        },
        "record": sizes,
        "versions": _versions(),
        "machine": machine,
        "connections": connections,
        "project_counters": served,
        "results": results,
        "verdict": verdict,
        "diagnostics": diagnostics,
    }


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _slower(factor: float) -> str:
    return f"{factor:.2f}x slower" if factor >= 1 else f"{1 / factor:.2f}x faster"


def render(report: dict[str, Any], console: Console) -> None:
    results, verdict = report["results"], report["verdict"]
    cfg, rec = report["config"], report["record"]
    table = Table(
        title=(
            f"cache hot path: {rec['json_bytes']} B record, {cfg['rounds']} rounds x "
            f"{cfg['seconds']} s, median round"
        ),
        caption="ratio = median of per-round ratios; ± = half the round range",
    )
    table.add_column("path")
    table.add_column("ops/s", justify="right")
    table.add_column("us/op", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("±", justify="right")
    for row in results.values():
        base = "MGET" if row["per_key"] else "GET"
        table.add_row(
            row["label"],
            _fmt_rate(row["ops_per_s"]),
            f"{row['us_per_op']:.1f}" if row["us_per_op"] >= 10 else f"{row['us_per_op']:.2f}",
            f"{row['ratio']:.2f}x {base}",
            f"{row['spread'] * 100:.0f}%",
        )
    console.print(table)
    yes = {True: "yes", False: "no"}
    lines = [
        f"hit vs redis-py: {verdict['hit_vs_redis']:.2f}x (target >= {HIT_TARGET})"
        + ("" if verdict["hit_ok"] else "  MISSED"),
        f"ahead of dogpile: {yes[verdict['ahead_of_dogpile']]} ({verdict['vs_dogpile']:.2f}x)",
        f"ahead of cashews: {yes[verdict['ahead_of_cashews']]} ({verdict['vs_cashews']:.2f}x)",
        f"get_many per key vs MGET per key: {_slower(verdict['get_many_slowdown_vs_mget'])} "
        f"(target within {MANY_TARGET:g}x)" + ("" if verdict["get_many_ok"] else "  MISSED"),
        f"near hit vs redis-py GET: {verdict['near_vs_redis']:.1f}x (target >= "
        f"{_near.NEAR_TARGET:g}x)"
        + ("" if verdict["near_ok"] else "  MISSED")
        + (
            f"; vs redis-py client-side cache {verdict['near_vs_redispy_csc']:.2f}x"
            if verdict["near_vs_redispy_csc"] is not None
            else "; redis-py client-side cache: not run"
        )
        + f", vs cashews client_side {verdict['near_vs_cashews_csc']:.2f}x",
        "get_many per key vs MGET + orjson.loads per key: "
        f"{_slower(verdict['get_many_slowdown_vs_mget_json'])} (ref: JSON decoding included)",
    ]
    counters, conns, machine = report["project_counters"], report["connections"], report["machine"]
    lines.append(
        f"project counters during the run: hits {counters['hits']:,}, misses {counters['misses']}, "
        f"stale {counters['stale']}; connections opened: "
        + ", ".join(f"{name} {count}" for name, count in conns.items())
    )
    lines.append(
        f"machine: {machine['cpus']} cpus, 1-min load {machine['loadavg_1m_before']} before, "
        f"{machine['loadavg_1m_after']} after"
    )
    for name, why in report.get("unavailable", {}).items():
        lines.append(f"not measured: {name}: {why}")
    if report["diagnostics"]:
        lines.append(
            "diagnostics (us): "
            + ", ".join(
                f"{name} {value:.2f}" if isinstance(value, float) else f"{name} {value}"
                for name, value in report["diagnostics"].items()
            )
        )
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        report = run(options)
    except (BenchError, _near.NearSetupError, ConfigError, redis.RedisError, OSError) as exc:
        print(f"bench.hotpath: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if options.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        sys.stdout.flush()
    else:
        console = Console(width=None if sys.stdout.isatty() else 110, soft_wrap=False)
        render(report, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
