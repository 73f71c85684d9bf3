"""bench.replay's figures, verdict, table and self-contained HTML report.

Figures of one pass (:func:`pass_figures`) come from the replayer's recording alone, except
the database transactions (pg_stat_database) and the consistency monitor's counters (the
management API). The failover window is from the master's kill until the Sentinels named the
new master plus ``FAILOVER_MARGIN_S`` (the breaker's reset and the near tier's reconnect);
latency and 5xx targets are judged outside it, and what happened inside is reported. The
latency is also given outside the failover and its recovery (:func:`recovery_window`: until
the killed node, rejoined, has synced every key again).
"""

from __future__ import annotations

import html
import io
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from bench._replayer import Answer, Recording

CACHED_ROUTES: Final = ("member", "member_list", "dashboard", "growth", "demographics", "lookup")
FAILOVER_MARGIN_S: Final = 3.0
WRITE_ROUTES: Final = ("member_write", "import")
RETIRED_BY_WRITES: Final = ("member_list", "dashboard", "growth", "demographics")
CLEAR_RECOVERY_S: Final = 10.0  # the warm-up of every member after a clear runs meanwhile
# The API's own latency of its cached answers per kind (GET /metrics, histogram buckets: the
# bound of the p99's bucket) is shown beside the client's, which includes the client.
P99_TARGET_MS: Final = 10.0
DB_RATIO_TARGET: Final = 0.10
NINES_TARGET: Final = 6.0
MONITOR_TX_PER_READ: Final = 2
VENDOR: Final = Path(__file__).resolve().parents[1] / "api_stub/dashboard/static/vendor"


def _ms(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 2)
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return round(cuts[min(int(q * 1000) - 1, len(cuts) - 1)] * 1000, 2)


def failover_window(rec: Recording) -> tuple[float, float] | None:
    if "kill" not in rec.incidents:
        return None
    end = rec.incidents.get("promoted", rec.incidents["kill"]) + FAILOVER_MARGIN_S
    return rec.incidents["kill"], end


def recovery_window(rec: Recording) -> tuple[float, float] | None:
    """From the master's kill until the killed node, rejoined as a replica, holds the data
    again (its full sync forks the new master and loads every key): the failover with its
    aftermath. None when the pass recorded no resync."""
    window = failover_window(rec)
    if window is None or "resynced" not in rec.incidents:
        return None
    return window[0], max(window[1], rec.incidents["resynced"])


def _inside(answer: Answer, window: tuple[float, float] | None) -> bool:
    return window is not None and window[0] <= answer.at <= window[1]


def routes(
    rec: Recording,
    window: tuple[float, float] | None,
    recovery: tuple[float, float] | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    firsts = _first_reads(rec)
    for route in sorted({a.route for a in rec.answers}):
        mine = [a for a in rec.answers if a.route == route]
        answered = [a for a in mine if not _inside(a, window) and 0 < a.status < 500]
        outside = [a.latency_s for a in answered]
        later = [a.latency_s for a in answered if id(a) not in firsts]
        after = [a.latency_s for a in mine if not _inside(a, recovery) and 0 < a.status < 500]
        found[route] = {
            "requests": len(mine),
            "p50_ms": _ms(outside, 0.50),
            "p99_ms": _ms(outside, 0.99),
            # Outside the failover and the rejoined replica's full sync (recovery_window).
            "p99_ms_outside_recovery": _ms(after, 0.99) if recovery else None,
            "p99_ms_all": _ms([a.latency_s for a in mine], 0.99),
            # Outside the failover, without each path's first answer of the pass: what is
            # left once every variant has been read once. For a kind no warm-up fills (the
            # list pages) a first read misses in any cache, and a two-minute day makes 20 list
            # variants' first reads 3% of their reads. For a warmed one (members) a first read
            # is a hit, unless a clear emptied it first: there this hides the clear's misses.
            "p99_ms_after_first_reads": _ms(later, 0.99),
            "first_reads": sum(id(a) in firsts for a in mine),
            "errors_5xx": sum(
                a.status >= 500 or a.status == 0 for a in mine if not _inside(a, window)
            ),
            "errors_5xx_in_failover": sum(
                a.status >= 500 or a.status == 0 for a in mine if _inside(a, window)
            ),
            "hits": sum(a.cache in ("HIT", "STALE") for a in mine),
            # What the cache itself answers: its hits, outside the failover window.
            "hit_p99_ms": _ms(
                [a.latency_s for a in mine if a.cache == "HIT" and not _inside(a, window)], 0.99
            ),
            "near_hits": sum(a.tier == "near" for a in mine),
        }
    return found


def _first_reads(rec: Recording) -> set[int]:
    """The first answer of each path in the pass (by ``id``)."""
    seen: set[str] = set()
    found: set[int] = set()
    for answer in sorted(rec.answers, key=lambda a: a.at):
        if answer.path not in seen:
            seen.add(answer.path)
            found.add(id(answer))
    return found


def misses_by_cause(rec: Recording, window: tuple[float, float] | None) -> dict[str, int]:
    """The requests of a pass that went to the database, by why: the writes themselves, reads
    inside the failover window (the cache unreachable) or the first ``CLEAR_RECOVERY_S`` after
    the ``clear``, reads of entries a write retired (lists, aggregates: every member write
    bumps their tags), and the other misses. An exact cache cannot avoid the first four."""
    cleared = rec.incidents.get("cleared", rec.incidents.get("clear"))
    found = dict.fromkeys(
        ("write", "failover", "after_clear", "retired_by_write", "member_miss", "other_miss"), 0
    )
    for answer in rec.answers:
        if answer.route in WRITE_ROUTES:
            found["write"] += 1
        elif answer.route not in CACHED_ROUTES or answer.cache in ("HIT", "STALE"):
            continue
        elif _inside(answer, window):
            found["failover"] += 1
        elif cleared is not None and cleared <= answer.at <= cleared + CLEAR_RECOVERY_S:
            found["after_clear"] += 1
        elif answer.route in RETIRED_BY_WRITES:
            found["retired_by_write"] += 1
        elif answer.route == "member":
            found["member_miss"] += 1
        else:
            found["other_miss"] += 1
    return found


def hit_rate_series(
    rec: Recording, duration: float, buckets: int = 60
) -> dict[str, list[float | None]]:
    width = max(duration / buckets, 0.5)
    times: list[float | None] = []
    rates: list[float | None] = []
    rps: list[float | None] = []
    for index in range(int(duration / width) + 1):
        lo, hi = index * width, (index + 1) * width
        inside = [a for a in rec.answers if lo <= a.at < hi]
        cached = [a for a in inside if a.route in CACHED_ROUTES and a.cache]
        times.append(round(lo, 2))
        rps.append(round(len(inside) / width, 1))
        rates.append(
            round(sum(a.cache in ("HIT", "STALE") for a in cached) / len(cached), 4)
            if cached
            else None
        )
    return {"t": times, "hit_rate": rates, "rps": rps}


def pass_figures(
    rec: Recording,
    duration: float,
    transactions: dict[str, int],
    consistency: dict[str, Any] | None,
    latency_server: dict[str, Any] | None,
) -> dict[str, Any]:
    window = failover_window(rec)
    recovery = recovery_window(rec)
    monitor_reads = int((consistency or {}).get("db_reads") or 0)
    requests = len(rec.answers)
    per_k = 1000 / requests if requests else 0.0
    cached = [a for a in rec.answers if a.route in CACHED_ROUTES and a.cache]
    lags = [p["lag_s"] for p in rec.polls if p.get("lag_s") is not None]
    return {
        "requests": requests,
        "behind_schedule_s": round(rec.behind_s, 3),
        "incidents": rec.incidents,
        "failover_window": list(window) if window else None,
        "recovery_window": list(recovery) if recovery else None,
        "imports": rec.imports,
        "routes": routes(rec, window, recovery),
        "database_requests_by_cause": misses_by_cause(rec, window),
        "hit_rate": round(sum(a.cache in ("HIT", "STALE") for a in cached) / len(cached), 4)
        if cached
        else None,
        "hit_rate_over_time": hit_rate_series(rec, duration),
        "db": {
            **transactions,
            "transactions_per_1k_requests": round(transactions["transactions"] * per_k, 1),
            "commits_per_1k_requests": round(transactions["commits"] * per_k, 1),
            # The monitor's reads are its own cost, reported beside it: each is a read
            # transaction and its connection check (pool pre-ping, a transaction too).
            "monitor_transactions": MONITOR_TX_PER_READ * monitor_reads,
            "transactions_without_monitor_per_1k_requests": round(
                (transactions["transactions"] - MONITOR_TX_PER_READ * monitor_reads) * per_k, 1
            ),
        },
        "writebehind_lag": {
            "t": [p["t"] for p in rec.polls],
            "lag_s": [p.get("lag_s") for p in rec.polls],
            "max_s": max(lags) if lags else None,
        },
        "consistency": consistency,
        "server_latency_by_kind": latency_server,
        "client_loop_lag": _loop_lag(rec, window),
    }


def _loop_lag(rec: Recording, window: tuple[float, float] | None) -> dict[str, Any]:
    """The replay client's own event-loop lag (a latency it adds to every answer in flight):
    the worst, and the seconds outside the failover window where it passed the p99 target."""
    worst = [lag for _, lag in rec.loop_lag]
    outside = [
        (second, lag)
        for second, lag in rec.loop_lag
        if window is None or not window[0] <= second <= window[1]
    ]
    return {
        "max_ms": round(max(worst) * 1000, 1) if worst else None,
        "seconds_over_target": sum(lag * 1000 >= P99_TARGET_MS for _, lag in outside),
        "worst_seconds": sorted(outside, key=lambda item: -item[1])[:5],
    }


def verdict(
    on: dict[str, Any], off: dict[str, Any], floor: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The targets judged; ``floor``: the pass without reads (``--floor``), if run."""
    windows = ((on.get("consistency") or {}).get("windows")) or {}
    first = windows[min(windows, key=float)] if windows else {}
    last = windows[max(windows, key=float)] if windows else {}
    ratio_1 = first.get("ratio")
    off_tx = off["db"]["transactions_per_1k_requests"]
    db_ratio = on["db"]["transactions_per_1k_requests"] / off_tx if off_tx else None
    off_own = off["db"].get("transactions_without_monitor_per_1k_requests") or off_tx
    on_own = on["db"].get("transactions_without_monitor_per_1k_requests")
    db_ratio_own = on_own / off_own if off_own and on_own is not None else None
    p99 = {r: v["p99_ms"] for r, v in on["routes"].items() if r in CACHED_ROUTES}
    hit_p99 = {r: v.get("hit_p99_ms") for r, v in on["routes"].items() if r in CACHED_ROUTES}
    after = {
        r: v.get("p99_ms_outside_recovery") for r, v in on["routes"].items() if r in CACHED_ROUTES
    }
    errors_outside = sum(v["errors_5xx"] for v in on["routes"].values())
    return {
        "consistent_first_window_ratio": ratio_1,
        "consistent_first_window_nines": first.get("nines"),
        "consistent_first_window_checked": first.get("checked"),
        # A run of n samples shows at most log10(n) nines: all consistent is the best it can say.
        "six_nines_first_window_ok": ratio_1 is not None and ratio_1 >= 1 - 10**-NINES_TARGET,
        "six_nines_provable_by_sample": (first.get("checked") or 0) >= 10**NINES_TARGET,
        # What the sample does show: with none inconsistent among n checks, the share of
        # inconsistent writes is below 3/n at 95% confidence (the rule of three); 6 nines
        # needs n >= 3,000,000 checks.
        "inconsistent_share_upper_95": (
            round(3 / first["checked"], 6)
            if first.get("checked") and first.get("inconsistent") == 0
            else None
        ),
        "all_consistent_last_window_ok": bool(last.get("all_consistent")),
        "db_transactions_ratio": round(db_ratio, 4) if db_ratio is not None else None,
        "db_ratio_ok": db_ratio is not None and db_ratio <= DB_RATIO_TARGET,
        "db_transactions_ratio_without_monitor": (
            round(db_ratio_own, 4) if db_ratio_own is not None else None
        ),
        # What no cache removes: the day without its reads (cache on), over the day without
        # the cache; and the reads' own share, by difference: (on - floor) / (off - floor).
        **_floor_ratios(on, off, floor),
        "cached_p99_ms": p99,
        "cached_p99_ok": all(v is not None and v < P99_TARGET_MS for v in p99.values()),
        "cached_p99_outside_recovery_ms": after,
        "cached_p99_outside_recovery_ok": all(
            v is not None and v < P99_TARGET_MS for v in after.values()
        ),
        "cached_p99_after_first_reads_ms": {
            r: v.get("p99_ms_after_first_reads")
            for r, v in on["routes"].items()
            if r in CACHED_ROUTES
        },
        "cached_hit_p99_ms": hit_p99,
        "cached_hit_p99_ok": all(v is None or v < P99_TARGET_MS for v in hit_p99.values()),
        "errors_5xx_outside_failover": errors_outside,
        "errors_5xx_in_failover": sum(v["errors_5xx_in_failover"] for v in on["routes"].values()),
        "no_5xx_outside_failover_ok": errors_outside == 0,
    }


def _floor_ratios(
    on: dict[str, Any], off: dict[str, Any], floor: dict[str, Any] | None
) -> dict[str, Any]:
    if floor is None:
        return {}
    on_tx, off_tx = on["db"]["transactions"], off["db"]["transactions"]
    floor_tx = floor["db"]["transactions"]
    return {
        "db_transactions_floor": floor_tx,
        "db_ratio_floor": round(floor_tx / off_tx, 4) if off_tx else None,
        "db_ratio_reads": (
            round((on_tx - floor_tx) / (off_tx - floor_tx), 4) if off_tx > floor_tx else None
        ),
    }


def _cpu_line(cpu: dict[str, Any] | None) -> str:
    """The machine's busy share, then each role's share of all cores, largest first."""
    if not cpu:
        return "-"
    shares = sorted(cpu["by_role_share"].items(), key=lambda item: -item[1])
    return f"{cpu['machine_busy_share']}; " + ", ".join(f"{r} {v}" for r, v in shares if v)


def table(result: dict[str, Any]) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    routes_table = Table(title="per route (cache on | off); latency outside the failover window")
    columns = ("route", "requests", "p50 ms", "p99 ms", "hit p99 ms", "server hit p99 ms",
               "5xx", "5xx in failover", "off p50", "off p99")  # fmt: skip
    for column in columns:
        routes_table.add_column(column, justify="right")
    on, off = result["passes"]["on"], result["passes"]["off"]
    server = on.get("server_latency_by_kind") or {}
    for route, row in on["routes"].items():
        other = off["routes"].get(route, {})
        hit_p99 = ((server.get(route) or {}).get("cached") or {}).get("p99")
        routes_table.add_row(
            route, str(row["requests"]), str(row["p50_ms"]), str(row["p99_ms"]),
            str(row.get("hit_p99_ms") or "-"),
            "-" if hit_p99 is None else f"<= {hit_p99 * 1000:g}",
            str(row["errors_5xx"]), str(row["errors_5xx_in_failover"]),
            str(other.get("p50_ms")), str(other.get("p99_ms")),
        )  # fmt: skip
    console.print(routes_table)
    summary = Table(title="targets")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_column("target")
    v = result["verdict"]
    consistent = (
        f"{v['consistent_first_window_ratio']} ({v['consistent_first_window_nines']} nines"
        f" of {v['consistent_first_window_checked']}; inconsistent share < "
        f"{v['inconsistent_share_upper_95']} at 95%)"
    )
    errors = f"{v['errors_5xx_outside_failover']} / {v['errors_5xx_in_failover']}"
    rows = (
        ("consistent within first window", consistent, ">= 6 nines"),
        ("all consistent within last window", str(v["all_consistent_last_window_ok"]), "100%"),
        ("db transactions / 1k requests on", str(on["db"]["transactions_per_1k_requests"]), ""),
        ("db transactions / 1k requests off", str(off["db"]["transactions_per_1k_requests"]), ""),
        ("db commits / 1k requests on | off", f"{on['db']['commits_per_1k_requests']} | "
         f"{off['db']['commits_per_1k_requests']}", ""),
        ("db ratio on/off", str(v["db_transactions_ratio"]), "<= 0.10"),
        ("db ratio on/off, the monitor's reads apart",
         str(v.get("db_transactions_ratio_without_monitor")), ""),
        ("db ratio floor: the day without reads (cache on)/off",
         str(v.get("db_ratio_floor", "- (--floor)")), ""),
        ("db ratio of the reads: (on - floor)/(off - floor)",
         str(v.get("db_ratio_reads", "- (--floor)")), "<= 0.10"),
        ("hit rate (on)", str(on["hit_rate"]), ""),
        ("requests to the database (on), by cause", ", ".join(
            f"{cause} {count}" for cause, count in on["database_requests_by_cause"].items()
        ), ""),
        ("cached hits' p99 < 10 ms outside failover", str(v["cached_hit_p99_ok"]), "all routes"),
        ("cached p99 < 10 ms outside failover", str(v["cached_p99_ok"]), "all routes"),
        ("cached p99 ms outside failover and resync", ", ".join(
            f"{route} {p99}" for route, p99 in v.get("cached_p99_outside_recovery_ms", {}).items()
        ), "< 10"),
        ("cached p99 ms outside failover, each path's first read apart", ", ".join(
            f"{route} {p99}" for route, p99 in v.get("cached_p99_after_first_reads_ms", {}).items()
        ), "< 10"),
        ("5xx outside / inside failover (on)", errors, "0 outside"),
        ("write-behind lag max s (on)", str(on["writebehind_lag"]["max_s"]), ""),
        ("failover window s (on)", str(on["failover_window"]), ""),
        ("failover and resync s (on)", str(on.get("recovery_window")), ""),
        ("monitor cost (on): checks, seconds, db reads",
         f"{(on['consistency'] or {}).get('checks')}, "
         f"{(on['consistency'] or {}).get('check_seconds')}, "
         f"{(on['consistency'] or {}).get('db_reads')}", ""),
        ("samples checked again: a later change on its way",
         f"{(on['consistency'] or {}).get('rechecks')}", ""),
        ("cpu (on): machine busy; share by role", _cpu_line(on.get("cpu")), ""),
        ("cpu (off): machine busy; share by role", _cpu_line(off.get("cpu")), ""),
    )  # fmt: skip
    for row in rows:
        summary.add_row(*row)
    console.print(summary)
    return console.export_text()


def write_html(result: dict[str, Any], path: Path) -> None:
    """One file: the figures as JSON, uPlot (the dashboard's offline copy) inline, charts."""
    script = (VENDOR / "uPlot.iife.min.js").read_text()
    style = (VENDOR / "uPlot.min.css").read_text()
    data = json.dumps(result).replace("</", "<\\/")
    text_table = html.escape(result.get("table", ""))
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>bench.replay</title>
<style>{style} body{{font:14px system-ui;margin:24px}}
pre{{background:#f6f6f6;padding:12px}}</style>
<script>{script}</script></head><body>
<h1>bench.replay: a day of traffic, cache on and off</h1>
<pre>{text_table}</pre>
<h2>Requests per second and hit rate (cache on)</h2><div id="hits"></div>
<h2>Write-behind lag (s)</h2><div id="lag"></div>
<h2>All figures</h2><pre id="raw"></pre>
<script>
const R = {data};
document.getElementById("raw").textContent = JSON.stringify(R, null, 2);
const on = R.passes.on, off = R.passes.off;
const marks = Object.entries(on.incidents);
const mark = {{hooks: {{draw: [u => {{ const c = u.ctx; c.save(); c.strokeStyle = "#c00";
  for (const [name, t] of marks) {{ const x = u.valToPos(t, "x", true);
    c.beginPath(); c.moveTo(x, u.bbox.top); c.lineTo(x, u.bbox.top + u.bbox.height); c.stroke();
    c.fillText(name, x + 3, u.bbox.top + 12); }} c.restore(); }}]}}}};
const opts = (series) => ({{width: 900, height: 280, plugins: [mark],
  scales: {{x: {{time: false}}}}, series: [{{label: "t (s)"}}, ...series]}});
const h = on.hit_rate_over_time, ho = off.hit_rate_over_time;
new uPlot(opts([{{label: "rps on", stroke: "#36c"}}, {{label: "rps off", stroke: "#999"}},
  {{label: "hit rate x100", stroke: "#2a2"}}]),
  [h.t, h.rps, ho.rps.slice(0, h.t.length), h.hit_rate.map(v => v === null ? null : v * 100)],
  document.getElementById("hits"));
const l = on.writebehind_lag;
new uPlot(opts([{{label: "lag on", stroke: "#36c"}}]), [l.t, l.lag_s],
  document.getElementById("lag"));
</script></body></html>
"""
    )
