"""The weekly TTL review: for each data type, is its TTL the right length?

Evidence per data type, over the previous ISO week (minute snapshots, tasks/counters.py):
hit rate and lookups, writes, invalidations (keys an invalidation task found and removed) and
the age of those entries when removed (tasks/lifetimes.py). The rules, in order:

1. Fewer than MIN_LOOKUPS lookups: keep; a quiet week says nothing.
2. Entries are mostly removed by invalidation (invalidations >= half the writes) and at a
   median age under a quarter of the TTL: freshness comes from invalidation, not expiry, and
   the rest of the TTL only keeps orphans in memory. Shorten to twice the median age.
3. Hit rate under HIT_RATE_TARGET while invalidation is rare (under a fifth of the writes):
   entries expire before they are read again. Double the TTL, up to MAX_TTL.
4. Otherwise keep.

Recommendations are whole seconds with the setting that carries them (CACHE_MEMBER_TTL ...);
they are advice in a report, never applied automatically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from cache import DataType
from cache.ttl import TtlPolicy
from cache.types import TTL_SETTING
from tasks.jobs.base import JobContext, Report, judged, window_dict
from tasks.lifetimes import median_age

MIN_LOOKUPS: Final = 100
HIT_RATE_TARGET: Final = 0.80
MIN_TTL: Final = 60
MAX_TTL: Final = 7 * 86_400


def setting_of(data_type: DataType) -> str:
    """The variable that carries a data type's TTL (cache.types.TTL_SETTING, upper-cased)."""
    return TTL_SETTING[data_type].upper()


@dataclass(frozen=True, slots=True)
class Evidence:
    ttl: int
    lookups: float
    hit_rate: float | None
    writes: float
    invalidated: int
    median_age: float | None  # seconds; upper bound of the median's age bucket

    @property
    def invalidation_rate(self) -> float | None:
        return self.invalidated / self.writes if self.writes else None


def recommend(evidence: Evidence) -> tuple[int, str]:
    """(recommended TTL in seconds, why)."""
    ttl = evidence.ttl
    if evidence.lookups < MIN_LOOKUPS:
        return ttl, f"keep: {int(evidence.lookups)} lookups is too little traffic to judge"
    rate = evidence.invalidation_rate or 0.0
    age = evidence.median_age
    if rate >= 0.5 and age is not None and age < ttl / 4:
        shorter = max(MIN_TTL, min(ttl, int(2 * age)))
        if shorter < ttl:
            return shorter, (
                f"shorten: {rate:.0%} of writes are invalidated, at a median age of about "
                f"{int(age)} s, far inside the {ttl} s TTL; the rest only keeps orphans"
            )
    hit_rate = evidence.hit_rate
    if hit_rate is not None and hit_rate < HIT_RATE_TARGET and rate < 0.2:
        longer = min(MAX_TTL, ttl * 2)
        if longer > ttl:
            return longer, (
                f"lengthen: hit rate {hit_rate:.0%} with rare invalidation ({rate:.0%} of "
                "writes): entries expire before they are read again"
            )
    return ttl, "keep: the hit rate and invalidation pattern fit the TTL"


def run(ctx: JobContext) -> Report:
    start, end = ctx.window
    window = ctx.fold_window()
    by_type, lifetimes = window.by_type(), window.lifetimes()
    rows: dict[str, Any] = {}
    changes: list[str] = []
    for data_type, ttl in TtlPolicy.from_settings(ctx.settings).base.items():
        counts = by_type.get(data_type.value, {})
        life = lifetimes.get(data_type.value, {})
        evidence = Evidence(
            ttl=ttl,
            lookups=float(counts.get("lookups") or 0),
            hit_rate=counts.get("hit_rate"),
            writes=float(counts.get("writes") or 0),
            invalidated=int(life.get("invalidated", 0)),
            median_age=median_age(life.get("buckets", [])),
        )
        recommended, why = recommend(evidence)
        rows[data_type.value] = {
            "setting": setting_of(data_type),
            "current_ttl": ttl,
            "recommended_ttl": recommended,
            "reason": why,
            "lookups": int(evidence.lookups),
            "hit_rate": evidence.hit_rate,
            "writes": int(evidence.writes),
            "invalidated": evidence.invalidated,
            "invalidation_rate": evidence.invalidation_rate,
            "median_age_at_invalidation": evidence.median_age,
            "mean_age_at_invalidation": life.get("mean_age"),
        }
        if recommended != ttl:
            changes.append(f"{setting_of(data_type)} {ttl} -> {recommended}")
    payload = {"window": window_dict(start, end), "snapshots": window.snapshots, "types": rows}
    # A recommended change is worth a look, not a page: it is reported as an alert state.
    return judged(payload, changes, has_data=window.snapshots > 0)
