"""The daily report: hit rate and error rate of the previous day, with an alert state.

Two views of the same day, both from the minute snapshots:

- the cache's own counters, summed over every process (what the application saw, per data
  type: a fresh or stale hit, a cached "not found", or a miss that went to the database);
- Redis's keyspace_hits / keyspace_misses (every GET on the server, the broker's included).

Alert when the cache's hit rate is below HIT_RATE_FLOOR or its error rate above
ERROR_RATE_CEILING, judged only on a day with at least MIN_LOOKUPS lookups (a quiet day's
rate says nothing); alert on any eviction (cache keys are being dropped for memory).
"""

from __future__ import annotations

from typing import Any, Final

from tasks.jobs.base import JobContext, Report, judged, window_dict

HIT_RATE_FLOOR: Final = 0.80
ERROR_RATE_CEILING: Final = 0.01
MIN_LOOKUPS: Final = 100


def run(ctx: JobContext) -> Report:
    start, end = ctx.window
    window = ctx.fold_window()
    total = window.total()
    redis = window.redis_increase()
    hits, misses = redis.get("keyspace_hits", 0.0), redis.get("keyspace_misses", 0.0)
    payload: dict[str, Any] = {
        "window": window_dict(start, end),
        "snapshots": window.snapshots,
        "cache": total,
        "by_type": window.by_type(),
        "redis": {
            "keyspace_hits": int(hits),
            "keyspace_misses": int(misses),
            "hit_rate": round(hits / (hits + misses), 6) if hits + misses else None,
            "evicted_keys": int(redis.get("evicted_keys", 0)),
            "expired_keys": int(redis.get("expired_keys", 0)),
        },
        "thresholds": {
            "hit_rate_floor": HIT_RATE_FLOOR,
            "error_rate_ceiling": ERROR_RATE_CEILING,
            "min_lookups": MIN_LOOKUPS,
        },
    }
    return judged(payload, alerts(total, payload["redis"]), has_data=window.snapshots > 0)


def alerts(total: dict[str, Any], redis: dict[str, Any]) -> list[str]:
    found: list[str] = []
    hit_rate, error_rate = total.get("hit_rate"), total.get("error_rate")
    if (total.get("lookups") or 0) >= MIN_LOOKUPS:
        if hit_rate is not None and hit_rate < HIT_RATE_FLOOR:
            found.append(f"hit rate {hit_rate:.1%} below {HIT_RATE_FLOOR:.0%}")
        if error_rate is not None and error_rate > ERROR_RATE_CEILING:
            found.append(f"error rate {error_rate:.2%} above {ERROR_RATE_CEILING:.0%}")
    if redis["evicted_keys"]:
        found.append(f"{redis['evicted_keys']} keys evicted for memory")
    return found
