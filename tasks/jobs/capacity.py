"""The monthly capacity analysis: memory trend and projected days until maxmemory.

The trend is a least-squares line through used_memory over the previous month's snapshots
(the database extracts the three numbers from each row; no payload is loaded). Projection:
(maxmemory - current) / slope, when memory grows and a maxmemory is set. Alerts:

- no maxmemory: Redis grows until the host runs out of memory (and nothing is evicted);
- usage above USAGE_ALERT of maxmemory;
- projected to reach maxmemory within HORIZON_DAYS.

The latest snapshot's key distribution says what the memory is made of.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

from tasks.jobs.base import JobContext, Report, judged, window_dict

USAGE_ALERT: Final = 0.80
HORIZON_DAYS: Final = 90
DAY: Final = 86_400.0


def slope_per_day(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, bytes) points, in bytes per day; None under 2 points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * DAY


def projection(used: int, maxmemory: int, slope: float | None) -> float | None:
    """Days until used reaches maxmemory at the trend; None when it never will (or no limit)."""
    if not maxmemory or slope is None or slope <= 0:
        return None
    return max(0.0, (maxmemory - used) / slope)


def analyse(series: Sequence[tuple[dt.datetime, int, int]]) -> tuple[dict[str, Any], list[str]]:
    if not series:
        return {"points": 0}, []
    origin = series[0][0]
    points = [((when - origin).total_seconds(), float(used)) for when, used, _ in series]
    _, used, maxmemory = series[-1]
    slope = slope_per_day(points)
    days = projection(used, maxmemory, slope)
    usage = used / maxmemory if maxmemory else None
    found: list[str] = []
    if not maxmemory:
        found.append("no maxmemory set: Redis grows until the host runs out of memory")
    elif usage is not None and usage > USAGE_ALERT:
        found.append(f"memory at {usage:.0%} of maxmemory")
    if days is not None and days < HORIZON_DAYS:
        found.append(f"maxmemory reached in about {days:.0f} days at the current trend")
    return {
        "points": len(series),
        "first": {"at": series[0][0].isoformat(), "used_memory": series[0][1]},
        "last": {"at": series[-1][0].isoformat(), "used_memory": used},
        "peak_used_memory": max(u for _, u, _ in series),
        "maxmemory": maxmemory,
        "usage": round(usage, 6) if usage is not None else None,
        "trend_bytes_per_day": round(slope, 1) if slope is not None else None,
        "days_to_maxmemory": round(days, 1) if days is not None else None,
    }, found


def run(ctx: JobContext) -> Report:
    start, end = ctx.window
    series = ctx.records.memory_series(start, end)
    memory, found = analyse(series)
    latest = ctx.records.latest_snapshot()
    keyspace = (latest or {}).get("payload", {}).get("keyspace", {}).get("patterns", {})
    payload = {"window": window_dict(start, end), "memory": memory, "keyspace": keyspace}
    return judged(payload, found, has_data=bool(series))
