"""The figures of /metrics as Prometheus text (prometheus-client), without global state.

The counters already live in cache.metrics and in the published process documents, so
nothing is mirrored into prometheus-client's default registry: each scrape gathers the
figures (api_stub.management.figures), hands them to a :class:`CacheCollector`, and renders
a registry made for that scrape. Two apps in one process (the tests) never see each other's
series, and nothing is left registered afterwards.

Counters carry ``process`` and ``role`` labels: one series per process that counts (this API
process, and each publishing worker), as a multi-process Prometheus setup would have.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

NS: Final = "membership_cache"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LOOKUPS: Final = (("hits", "hit"), ("stale", "stale"), ("negative_hits", "negative_hit"))
BREAKER: Final = {"closed": 0, "half_open": 1, "open": 2}


def _buckets(snapshot: Mapping[str, Any]) -> list[tuple[str, float]]:
    """cache.metrics.Histogram buckets (per bucket) as cumulative (le, count) pairs."""
    cumulative, out = 0, []
    for bound, count in snapshot["buckets"].items():
        cumulative += int(count)
        out.append((bound, float(cumulative)))
    return out


class CacheCollector:
    """Yields the metric families of one gathered figures document."""

    def __init__(self, figures: Mapping[str, Any], live: Mapping[str, Any]) -> None:
        self.figures = figures
        self.live = live

    def _processes(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        mine = self.figures["this_process"]
        yield mine["process"], "api", mine["by_type"]
        for name, doc in self.figures["processes"].items():
            yield name, str(doc.get("role") or "unknown"), doc["by_type"]

    def collect(self) -> Iterable[Metric]:
        yield from self._counters()
        yield from self._latency()
        yield from self._state()
        yield from self._near()
        yield from self._consistency()

    def _consistency(self) -> Iterator[Metric]:
        """The consistency monitor's counters (shared by every process, in Redis)."""
        found = self.figures.get("consistency") or {}
        if not found.get("available"):
            return
        checked = CounterMetricFamily(
            f"{NS}_consistency_checked",
            "Sampled writes checked, per window after their acknowledgement",
            labels=["window"],
        )
        consistent = CounterMetricFamily(
            f"{NS}_consistency_consistent",
            "Sampled writes whose cached copies agreed with the database, per window",
            labels=["window"],
        )
        ratio = GaugeMetricFamily(
            f"{NS}_consistency_ratio",
            "Share of checked sampled writes consistent within the window",
            labels=["window"],
        )
        for window, values in found["windows"].items():
            checked.add_metric([window], values["checked"])
            consistent.add_metric([window], values["consistent"])
            if values["ratio"] is not None:
                ratio.add_metric([window], values["ratio"])
        yield checked
        yield consistent
        yield ratio
        for name, help_text in (
            ("sampled", "Acknowledged writes sampled by the consistency monitor"),
            ("dropped", "Sampled checks dropped past CONSISTENCY_MAX_SAMPLES"),
            ("checks", "Checks the consistency monitor ran (its cost: rate() is checks/s)"),
            ("rechecks", "Samples checked again a window later: a later change was on its way"),
            ("check_seconds", "Seconds the consistency monitor spent checking (its cost)"),
            ("db_reads", "Database queries the consistency monitor ran (one per batch)"),
        ):
            yield CounterMetricFamily(f"{NS}_consistency_{name}", help_text, value=found[name])

    def _near(self) -> Iterator[Metric]:
        """The near tier of this process (cache.metrics.NearCounters); absent when off."""
        near = self.live.get("near")
        if not near:
            return
        process = self.figures["this_process"]["process"]
        for name, help_text in (
            ("hits", "Lookups served from process memory"),
            ("misses", "Near lookups that went on to Redis"),
            ("evictions", "Near entries evicted to stay within CACHE_NEAR_MAX_BYTES"),
            ("invalidations", "Keys named by Redis invalidation pushes"),
            ("flushes", "Near tier emptied: tracking lost or reconnected, FLUSHDB"),
            ("refused", "Reads not kept: invalidated while in flight"),
        ):
            family = CounterMetricFamily(f"{NS}_near_{name}", help_text, labels=["process"])
            family.add_metric([process], float(near[name]))
            yield family
        for name, help_text in (
            ("bytes", "Estimated bytes the near tier holds"),
            ("entries", "Entries the near tier holds"),
        ):
            gauge = GaugeMetricFamily(f"{NS}_near_{name}", help_text, labels=["process"])
            gauge.add_metric([process], float(near[name]))
            yield gauge

    def _counters(self) -> Iterator[Metric]:
        labels = ["process", "role", "data_type"]
        lookups = CounterMetricFamily(
            f"{NS}_lookups", "Cache lookups by outcome", labels=[*labels, "outcome"]
        )
        families = {
            name: CounterMetricFamily(f"{NS}_{name}", help_text, labels=labels)
            for name, help_text in (
                ("loads", "Loader calls (cache misses computed)"),
                ("load_errors", "Loader calls that raised"),
                ("declined", "Loader calls the source refused for the client (404, 422)"),
                ("errors", "Redis errors and unreadable entries"),
                ("writes", "Values stored"),
                ("writes_rejected", "Fills refused by a version guard or a lost lease"),
                ("skipped_writes", "Writes skipped: cache disabled or Redis unavailable"),
                ("early_refreshes", "Early (XFetch) recomputations"),
            )
        }
        hit_ratio = GaugeMetricFamily(
            f"{NS}_hit_ratio", "Served / lookups since start, all processes", labels=["data_type"]
        )
        for process, role, by_type in self._processes():
            for data_type, values in by_type.items():
                base = [process, role, data_type]
                for counter, outcome in (*LOOKUPS, ("misses", "miss")):
                    lookups.add_metric([*base, outcome], values[counter])
                for name, family in families.items():
                    family.add_metric(base, values[name])
        for data_type, values in self.figures["overall"]["by_type"].items():
            if values["hit_rate"] is not None:
                hit_ratio.add_metric([data_type], values["hit_rate"])
        yield lookups
        yield from families.values()
        yield hit_ratio

    def _latency(self) -> Iterator[Metric]:
        requests = HistogramMetricFamily(
            f"{NS}_request_duration_seconds",
            "Latency of cached routes in this process, cached (HIT, STALE) vs uncached (MISS)",
            labels=["outcome"],
        )
        for outcome, snapshot in self.figures["latency"]["requests"].items():
            requests.add_metric([outcome], _buckets(snapshot), snapshot["sum"])
        loads = HistogramMetricFamily(
            f"{NS}_load_duration_seconds", "Loader time in this process", labels=["data_type"]
        )
        for data_type, values in self.live["by_type"].items():
            snapshot = values["load_seconds"]
            loads.add_metric([data_type], _buckets(snapshot), snapshot["sum"])
        yield requests
        yield loads

    def _state(self) -> Iterator[Metric]:
        mine = self.figures["this_process"]
        state = mine["breaker"]["state"]
        yield GaugeMetricFamily(
            f"{NS}_breaker_state", "0 closed, 1 half-open, 2 open", value=BREAKER.get(state, 2)
        )
        yield CounterMetricFamily(
            f"{NS}_breaker_opened",
            "Times the breaker opened",
            value=mine["breaker"]["times_opened"],
        )
        yield GaugeMetricFamily(
            f"{NS}_outbox_pending", "Invalidations waiting for Redis", value=mine["outbox_pending"]
        )
        redis = self.figures["redis"]
        yield GaugeMetricFamily(f"{NS}_redis_up", "INFO answered", value=int(bool(redis["up"])))
        for name, kind, help_text in (
            ("used_memory", "gauge", "Redis used_memory, bytes"),
            ("maxmemory", "gauge", "Redis maxmemory, bytes (0: no limit)"),
            ("keyspace_hits", "counter", "Redis keyspace hits"),
            ("keyspace_misses", "counter", "Redis keyspace misses"),
            ("evicted_keys", "counter", "Keys evicted by maxmemory"),
        ):
            if name in redis:
                family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
                yield family(f"{NS}_redis_{name}", help_text, value=float(redis[name]))
        replicas = redis.get("replicas")
        if replicas is not None:
            yield GaugeMetricFamily(
                f"{NS}_redis_connected_replicas", "Replicas online", value=len(replicas)
            )
            lag = GaugeMetricFamily(
                f"{NS}_redis_replica_lag_seconds",
                "Seconds since the replica's last acknowledgement",
                labels=["replica"],
            )
            behind = GaugeMetricFamily(
                f"{NS}_redis_replica_behind_bytes",
                "Replication offset the replica has yet to apply",
                labels=["replica"],
            )
            for replica in replicas:
                lag.add_metric([replica["address"]], replica["lag_s"])
                behind.add_metric([replica["address"]], replica["behind_bytes"])
            yield lag
            yield behind
        yield from self._processes_alive()
        wb = self.figures["writebehind"]
        if wb.get("available"):
            for name, help_text in (
                ("backlog", "Write-behind events accepted, not yet flushed"),
                ("lag_s", "Age of the oldest unflushed write-behind event, seconds"),
                ("dead_letters", "Write-behind events dead-lettered"),
            ):
                metric = "lag_seconds" if name == "lag_s" else name
                yield GaugeMetricFamily(f"{NS}_writebehind_{metric}", help_text, value=wb[name])
        patterns = ((self.figures.get("keyspace") or {}).get("patterns")) or {}
        keys = GaugeMetricFamily(f"{NS}_keys", "Keys by pattern (snapshot)", labels=["pattern"])
        size = GaugeMetricFamily(
            f"{NS}_key_bytes", "Bytes by pattern (snapshot estimate)", labels=["pattern"]
        )
        for pattern, values in patterns.items():
            keys.add_metric([pattern], values.get("keys", 0))
            size.add_metric([pattern], values.get("bytes", 0))
        yield keys
        yield size

    def _processes_alive(self) -> Iterator[Metric]:
        """Each process seen publishing (workers, other APIs), and how old the last metrics
        snapshot is: beat schedules it every minute, so its age says whether beat runs."""
        alive = GaugeMetricFamily(
            f"{NS}_processes", "Processes publishing their counters, by role", labels=["role"]
        )
        roles: dict[str, int] = {}
        for _name, doc in self.figures["processes"].items():
            role = str(doc.get("role") or "unknown")
            roles[role] = roles.get(role, 0) + 1
        roles["api"] = roles.get("api", 0) + 1  # this process
        for role, count in sorted(roles.items()):
            alive.add_metric([role], count)
        yield alive
        taken = _epoch(self.figures.get("snapshot_taken_at"))
        if taken is not None:
            yield GaugeMetricFamily(
                f"{NS}_snapshot_age_seconds",
                "Age of the newest metrics snapshot (written every minute by beat's job)",
                value=max(float(self.figures["taken_at"]) - taken, 0.0),
            )


def _epoch(value: Any) -> float | None:
    """A snapshot's time (datetime, ISO text or epoch seconds) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def render(figures: Mapping[str, Any], live: Mapping[str, Any]) -> bytes:
    """The exposition text of one scrape, from a registry that lives as long as the call."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CacheCollector(figures, live))
    return generate_latest(registry)
