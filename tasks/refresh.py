"""Refresh-ahead of the hot set: popular entries are re-read before they expire, so their
readers never meet the TTL boundary (no MISS, no STALE, no load on the request path).

**The hotness signal: Redis's own access bookkeeping, read with OBJECT.** Under an LFU
``maxmemory-policy`` (production runs ``volatile-lfu``) ``OBJECT FREQ`` is the server's
logarithmic access counter; under any other policy (the dev and test servers run
``noeviction``) ``OBJECT IDLETIME`` is the seconds since the last access. Either is kept by
the server on every read at no cost to the read path: no sampled ZINCRBY on each GET (an
extra write per read, and a change to the hot path of every front), no in-process counting
to publish and merge. Neither OBJECT nor PTTL touches the key (NOTOUCH lookups), so looking
does not make a key hot, and an overwrite keeps the LFU counter. An entry is *hot* when it
was read since it was written: FREQ above the counter's initial value (LFU_INIT_VAL, 5), or
IDLETIME shorter than the entry's age (derived from its PTTL). Only hot entries are refreshed:
an entry nobody read would cost a query and save no miss.

**Candidates**: every current key of the ``Warm.CRITICAL`` kinds (a handful), and members
tracked in ``<prefix>sys:refresh:hot``, a sorted set of at most ``cache_refresh_hot_size``
keys scored by their reads seen run after run, with decay (:func:`recent_reads`, DECAY): the
counters alone are too coarse to rank by (every key read once has FREQ 6, IDLETIME 0). It is
fed by an incremental SCAN of member keys, ``cache_refresh_scan_budget`` keys per run, its
cursor kept beside it, so finding new hot members never costs a full scan in one go. Each
run reads PTTL and the signal of every candidate in one pipeline.

**Due**: an entry whose soft expiry is within ``cache_refresh_lead_s``. The soft expiry is
bounded from the PTTL alone (the hard TTL is the soft one plus the stale window, which is at
most ``base * stale_ratio * (1 + jitter)``), so no value is read to decide.

**Writes**: members re-read in one query per 5,000 and written with ``set_many(versions=...,
present_only=True)``: the version guard of write-through (a row read before a newer write can
never replace it), and only over a value still cached. An invalidation that *deletes* (a bulk
change, an import, the outbox's replay after an outage, a ``clear``) leaves no version to guard
with: without the second condition a row read before it came back once it had run, until the
TTL. Aggregates are written under the generations read *before* their query, the same way.

**Cost**: the result counts ``queries`` (source reads issued) and ``misses_avoided`` (hot
entries refreshed: each would have sent one reader to the database at its expiry, one since
the fill lease is single-flight). Members are batched, so queries never exceed misses
avoided; the job refuses to refresh what is not hot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from celery import Task, shared_task
from redis.exceptions import RedisError, ResponseError

from cache import CacheService, DataType
from cache.errors import CacheUnavailable
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Kind, Warm
from cache.ttl import TtlPolicy
from config import Settings
from db.errors import DatabaseUnavailable
from tasks.runtime import runtime_of
from tasks.sources import Source
from tasks.warming import BATCH_SIZE
from workers import routing

log = logging.getLogger("tasks.refresh")

Signal = Literal["freq", "idle"]
LFU_INIT_VAL: Final = 5  # Redis's initial LFU counter of a new key (server.h)
# OBJECT IDLETIME counts in whole seconds of the server's LRU clock: an idle time one tick
# short of the entry's age may still mean "never read".
IDLE_RESOLUTION_S: Final = 1.0


# Each run multiplies the hot set's scores by this before adding what it saw: a member read in
# every run converges to 1 / (1 - DECAY) points, one read once fades within a few runs.
DECAY: Final = 0.8


@dataclass(frozen=True, slots=True)
class RefreshConfig:
    lead_s: float
    hot_size: int
    scan_budget: int
    interval_s: float = routing.REFRESH_SECONDS  # how often a run comes

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshConfig:
        return cls(
            settings.cache_refresh_lead_s,
            settings.cache_refresh_hot_size,
            settings.cache_refresh_scan_budget,
        )


# --- decisions (pure) ---------------------------------------------------------------------------
def fresh_left(pttl_ms: int, base_ttl: float, policy: TtlPolicy) -> float:
    """A lower bound of the seconds until the entry's soft expiry, from its PTTL."""
    stale_window = base_ttl * policy.stale_ratio * (1.0 + policy.jitter)
    return pttl_ms / 1000.0 - stale_window


def age(pttl_ms: int, base_ttl: float, policy: TtlPolicy) -> float:
    """A lower bound of the seconds since the entry was written."""
    shortest_hard = base_ttl * (1.0 - policy.jitter) * (1.0 + policy.stale_ratio)
    return max(0.0, shortest_hard - pttl_ms / 1000.0)


def is_hot(signal: Signal, value: int | None, age_s: float) -> bool:
    """Read since it was written: an LFU counter above its initial value, or an idle time
    shorter than the entry's age by more than the LRU clock's resolution."""
    if value is None:
        return False
    if signal == "freq":
        return value > LFU_INIT_VAL
    return value + IDLE_RESOLUTION_S < age_s


def is_due(pttl_ms: int, base_ttl: float, policy: TtlPolicy, lead_s: float) -> bool:
    """Soft expiry within ``lead_s``. A missing key (-2) or one without a TTL (-1) is not due:
    a missing one is a miss already, one without a TTL never expires."""
    return pttl_ms >= 0 and fresh_left(pttl_ms, base_ttl, policy) <= lead_s


def recent_reads(signal: Signal, value: int | None, interval_s: float) -> float:
    """Points a key earns in one run: its LFU counter above the initial value, or one point
    when it was read within the last interval. Summed with decay across runs, they rank the
    hot set by sustained popularity, not by one lucky read (the counters are coarse: every
    key read once has FREQ 6 and IDLETIME 0)."""
    if value is None:
        return 0.0
    if signal == "freq":
        return float(max(0, value - LFU_INIT_VAL))
    return 1.0 if value <= interval_s else 0.0


@dataclass(slots=True)
class Candidate:
    key: str
    data_type: DataType
    pttl_ms: int
    signal_value: int | None
    member_id: int | None = None
    kind: Kind | None = None
    params: tuple[Any, ...] = ()


def plan(
    candidates: Iterable[Candidate], signal: Signal, policy: TtlPolicy, lead_s: float
) -> list[Candidate]:
    """The candidates to refresh now: hot and due, soonest expiry first."""
    chosen = []
    for c in candidates:
        base = float(policy.ttl(c.data_type))
        if is_due(c.pttl_ms, base, policy, lead_s) and is_hot(
            signal, c.signal_value, age(c.pttl_ms, base, policy)
        ):
            chosen.append(c)
    return sorted(chosen, key=lambda c: c.pttl_ms)


@dataclass(slots=True)
class RefreshReport:
    signal: str = ""
    candidates: int = 0
    due: int = 0
    refreshed: int = 0
    rejected: int = 0  # refused by the version guard (a newer value was cached meanwhile)
    gone: int = 0  # members deleted at the source
    queries: int = 0  # source reads issued
    misses_avoided: int = 0  # hot entries refreshed before their expiry
    discovered: int = 0  # member keys examined by this run's SCAN
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "candidates": self.candidates,
            "due": self.due,
            "refreshed": self.refreshed,
            "rejected": self.rejected,
            "gone": self.gone,
            "queries": self.queries,
            "misses_avoided": self.misses_avoided,
            "worth_it": self.queries <= self.misses_avoided,
            "discovered": self.discovered,
        }


# --- Redis reads --------------------------------------------------------------------------------
def _probe(
    client: Any, keys: Sequence[str], signal: Signal
) -> tuple[list[tuple[int, int | None]], bool]:
    """(PTTL, FREQ or IDLETIME) of each key in one pipeline, and whether the server refused
    the signal (the other maxmemory policy family)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
        pipe.object(signal if signal == "freq" else "idletime", key)
    replies = pipe.execute(raise_on_error=False)
    out, refused = [], False
    for i in range(0, len(replies), 2):
        pttl, value = replies[i], replies[i + 1]
        refused = refused or isinstance(value, ResponseError)
        out.append(
            (
                int(pttl) if isinstance(pttl, int) else -2,
                int(value) if isinstance(value, int) else None,
            )
        )
    return out, refused


def probe(client: Any, keys: Sequence[str]) -> tuple[Signal, list[tuple[int, int | None]]]:
    """:func:`_probe` with the signal the server keeps: FREQ under an LFU policy, else
    IDLETIME (a missing key answers neither way, so the first refusal decides)."""
    found, refused = _probe(client, keys, "freq")
    if not refused:
        return "freq", found
    return "idle", _probe(client, keys, "idle")[0]


def _discover(
    cache: CacheService, client: Any, config: RefreshConfig, seen: set[str]
) -> tuple[int, Signal]:
    """Advance the member SCAN by the budget; fold what it finds into the hot set. How many
    keys it found, and the signal the server answered for them."""
    keys = cache.keys
    hot, cursor_key = keys.system("refresh", "hot"), keys.system("refresh", "cursor")
    raw = client.get(cursor_key)
    cursor = int(raw) if raw else 0
    found: list[str] = []
    examined = 0
    match = keys.pattern("member:*")
    step = min(config.scan_budget, 1000)
    while examined < config.scan_budget:
        cursor, batch = client.scan(cursor, match=match, count=step)
        examined += step
        found += [
            key
            for key in (k.decode() if isinstance(k, bytes) else str(k) for k in batch)
            if key not in seen  # scored already by this run
        ]
        if cursor == 0:
            break
    pipe = client.pipeline(transaction=False)
    pipe.set(cursor_key, int(cursor))
    signal: Signal = "freq"
    if found:
        signal, probed = probe(client, found)
        for key, (pttl, value) in zip(found, probed, strict=True):
            points = recent_reads(signal, value, config.interval_s)
            if pttl >= 0 and points > 0:
                pipe.zincrby(hot, points, key)
    pipe.zremrangebyrank(hot, 0, -(config.hot_size + 1))
    pipe.execute()
    return len(found), signal


def _aggregates(cache: CacheService) -> list[Candidate]:
    out = []
    for kind in KINDS.warmed(Warm.CRITICAL):
        gens = generations_sync(cache, kind.tags)
        if gens is None:
            raise CacheUnavailable(f"could not read the generations of {kind.name}")
        for key, params in kind.variant_keys(cache.keys, gens).items():
            out.append(Candidate(key, kind.data_type, -2, None, kind=kind, params=params))
    return out


def candidates(
    cache: CacheService, client: Any, config: RefreshConfig, report: RefreshReport
) -> tuple[Signal, list[Candidate]]:
    """Every candidate with its PTTL and signal read (a few pipelines, no value read)."""
    found = _aggregates(cache)
    hot = cache.keys.system("refresh", "hot")
    for raw in client.zrevrange(hot, 0, config.hot_size - 1):
        member_id = cache.keys.member_id_of(raw)
        if member_id is not None:
            key = cache.keys.member(member_id)
            found.append(Candidate(key, DataType.MEMBER, -2, None, member_id))
    signal, probed = probe(client, [c.key for c in found])
    report.signal = signal
    gone = []
    pipe = client.pipeline(transaction=False)
    pipe.zunionstore(hot, {hot: DECAY})  # older reads count for less
    for c, (pttl, value) in zip(found, probed, strict=True):
        c.pttl_ms, c.signal_value = pttl, value
        if c.member_id is None:
            continue
        if pttl == -2 or value is None:
            gone.append(c.key)
        elif (points := recent_reads(signal, value, config.interval_s)) > 0:
            pipe.zincrby(hot, points, c.key)
    if gone:
        pipe.zrem(hot, *gone)
    pipe.execute()
    # New members for the next runs (this run's candidates are already probed).
    report.discovered, answered = _discover(cache, client, config, {c.key for c in found})
    if not any(c.pttl_ms >= 0 for c in found):
        report.signal = answered  # nothing cached among the candidates to tell the signal by
    report.candidates = len(found)
    return signal, found


# --- writes ---------------------------------------------------------------------------------------
def _refresh_members(
    cache: CacheService, source: Source, due: list[Candidate], report: RefreshReport
) -> None:
    ids = [c.member_id for c in due if c.member_id is not None]
    for start in range(0, len(ids), BATCH_SIZE):
        chunk = ids[start : start + BATCH_SIZE]
        rows = source.members(chunk)
        report.queries += 1
        items = {cache.keys.member(i): m for i, m in rows.items()}
        versions = {cache.keys.member(i): int(m["version"]) for i, m in rows.items()}
        report.gone += len(chunk) - len(rows)
        _store(cache, items, DataType.MEMBER, versions, report)


def _refresh_aggregates(
    cache: CacheService, source: Source, due: list[Candidate], report: RefreshReport
) -> None:
    for c in due:
        assert c.kind is not None
        gens = generations_sync(cache, c.kind.tags)  # before the query: a bump retires it
        if gens is None:
            raise CacheUnavailable(f"could not read the generations of {c.kind.name}")
        value = source.load(c.kind, c.params)
        report.queries += 1
        key = c.kind.key(cache.keys, c.params, gens)
        _store(cache, {key: value}, c.kind.data_type, {key: 0}, report)


def _store(
    cache: CacheService,
    items: dict[str, Any],
    data_type: DataType,
    versions: dict[str, int],
    report: RefreshReport,
) -> None:
    if not items:
        return
    counters = cache.metrics.of(data_type)
    writes, skipped = counters.writes, counters.skipped_writes
    cache.set_many(items, data_type, versions=versions, present_only=True)
    if counters.skipped_writes > skipped:
        raise CacheUnavailable(f"could not store {len(items)} {data_type.value} keys")
    stored = counters.writes - writes
    report.refreshed += stored
    report.rejected += len(items) - stored
    report.misses_avoided += stored  # a rejected write found a newer value: nothing expired
    report.keys += list(items)


def refresh_once(
    cache: CacheService, source: Source, client: Any, config: RefreshConfig
) -> RefreshReport:
    """One run: find the hot entries near expiry and re-read them from the source."""
    report = RefreshReport()
    try:
        signal, found = candidates(cache, client, config, report)
    except RedisError as exc:
        raise CacheUnavailable(f"refresh-ahead could not read candidates: {exc}") from exc
    due = plan(found, signal, cache.policy, config.lead_s)
    report.due = len(due)
    _refresh_aggregates(cache, source, [c for c in due if c.kind is not None], report)
    _refresh_members(cache, source, [c for c in due if c.member_id is not None], report)
    return report


@shared_task(
    bind=True,
    **routing.task_options(
        routing.REFRESH_AHEAD, retry_on=()
    ),  # the next tick is the retry: REFRESH_SECONDS
)
def refresh_ahead(self: Task[Any, Any]) -> dict[str, Any]:
    """Refresh the hot entries whose soft expiry is near (cache_refresh_lead_s)."""
    runtime = runtime_of(self)
    if not runtime.settings.cache_refresh_ahead:
        return {"enabled": False}
    try:
        report = refresh_once(
            runtime.cache,
            runtime.source,
            runtime.worker.services.redis("cache"),
            RefreshConfig.from_settings(runtime.settings),
        )
    except (CacheUnavailable, DatabaseUnavailable) as exc:
        log.warning("refresh-ahead skipped this tick: %s", exc)
        return {"enabled": True, "error": f"{type(exc).__name__}: {exc}"}
    return {"enabled": True} | report.as_dict()
