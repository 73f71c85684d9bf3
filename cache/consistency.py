"""The consistency monitor's samples: acknowledged writes, checked again after each window.

What users feel is not a hit rate but whether a read after a write answers the write. A
share of acknowledged member writes (``CONSISTENCY_SAMPLE_RATE``) is recorded where the
write tells the cache (the API's write routes and the ``on_bulk_operation`` task); the
monitor (tasks/consistency.py, every second from beat) reads each one's cached copies and
the database once per window (``CONSISTENCY_WINDOWS_S``: 1, 10 and 60 s after the ack) and
counts agreements.

Layout, on the durable role (never evicted), under ``Keys.system``::

    sys:consistency:due:<window>   ZSET  sample (JSON) -> when its check is due (ack + window);
                                         at most CONSISTENCY_MAX_SAMPLES, oldest dropped
    sys:consistency:counts         HASH  <window>:checked, <window>:consistent,
                                         <window>:late_seconds (check time past due), sampled,
                                         dropped, checks, check_seconds, db_reads, runs
    sys:consistency:inconsistent   LIST  the newest inconsistencies (JSON), newest first

A sample is one member: its id, the version the write produced (None after a bulk change,
which returns no versions) and the acknowledgement time. Recording is one pipelined step,
only for a sampled write; a Redis that refuses it loses the sample, never the write.

A check that finds a copy behind a *later* change of the member (committed after the sampled
write, perhaps still on its way to the cache: its writer has not acknowledged it yet) puts the
sample back once, with what it saw (:class:`Seen`), due one window later; the change must show
by then (tasks/monitor.py).

Claiming a due check is ZREM: of two monitors that read the same due sample, one removes
it and checks it, the other skips it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

from redis.exceptions import RedisError

from cache.client import AsyncRedis, SyncRedis
from cache.keys import Keys
from config import Settings

log = logging.getLogger("cache.consistency")

RECENT_KEPT: Final = 100  # inconsistencies kept in the list for the API and the bench


def window_name(window: float) -> str:
    """``1``, ``10``, ``0.5``: the window as it appears in keys, counters and labels."""
    return f"{window:g}"


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    rate: float
    windows: tuple[float, ...]
    max_samples: int
    max_checks: int
    max_per_write: int
    probe_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorConfig:
        return cls(
            settings.consistency_sample_rate,
            settings.consistency_windows,
            settings.consistency_max_samples,
            settings.consistency_max_checks,
            settings.consistency_max_per_write,
            settings.consistency_probe_url.rstrip("/"),
        )


@dataclass(frozen=True, slots=True)
class Seen:
    """A later change of the member that a check found missing from a copy: the database's
    row then (version, None when deleted; its updated-at), and when it must show by."""

    version: int | None
    updated_at: float | None
    due: float  # unix seconds: the first check's time plus the window


@dataclass(frozen=True, slots=True)
class Sample:
    member_id: int
    version: int | None  # what the write produced; None after a bulk change
    acked_at: float  # unix seconds
    change: str  # cache.kinds.Change value
    nonce: str  # two samples of one member at one instant stay two
    seen: Seen | None = None  # set when the sample waits for a later change to show

    def due(self, window: float) -> float:
        """When this sample's check in ``window`` falls due."""
        return self.seen.due if self.seen is not None else self.acked_at + window

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str | bytes) -> Sample:
        data = json.loads(raw)
        seen = data.get("seen")
        return cls(
            int(data["member_id"]),
            None if data["version"] is None else int(data["version"]),
            float(data["acked_at"]),
            str(data["change"]),
            str(data["nonce"]),
            None
            if seen is None
            else Seen(
                None if seen["version"] is None else int(seen["version"]),
                None if seen["updated_at"] is None else float(seen["updated_at"]),
                float(seen["due"]),
            ),
        )


@dataclass(frozen=True, slots=True)
class Inconsistency:
    """One cached copy that disagreed with the database at a check."""

    window: str
    member_id: int
    key: str  # the Redis key, or the probed URL
    tier: str  # "redis" (a record or an entry) or "api" (what a reader of the API got)
    cached: Any  # the cached version (an entry: its created-at)
    database: Any  # the database's version (an entry: the member's updated-at)
    # "write": the sampled write itself is missing; "change": a later change of the member,
    # seen committed one window earlier, is still missing.
    missing: str = "write"
    written: int | None = None  # the version the sampled write produced

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Tally:
    """What one monitor run found, added to the counters in one step."""

    checked: dict[str, int]
    consistent: dict[str, int]
    late_seconds: dict[str, float]
    inconsistencies: list[Inconsistency]
    checks: int = 0
    rechecks: int = 0  # samples put back for a later change to show (counted when decided)
    seconds: float = 0.0
    db_reads: int = 0  # queries run (one per batch): the monitor's own database cost

    @classmethod
    def empty(cls, seconds: float = 0.0) -> Tally:
        return cls({}, {}, {}, [], seconds=seconds)

    def merge(self, other: Tally) -> None:
        for window, checked in other.checked.items():
            self.checked[window] = self.checked.get(window, 0) + checked
            self.consistent[window] = self.consistent.get(window, 0) + other.consistent[window]
            self.late_seconds[window] = (
                self.late_seconds.get(window, 0.0) + other.late_seconds[window]
            )
        self.inconsistencies.extend(other.inconsistencies)
        self.checks += other.checks
        self.rechecks += other.rechecks
        self.db_reads += other.db_reads

    def add(self, window: str, agreed: bool, late_s: float) -> None:
        self.checked[window] = self.checked.get(window, 0) + 1
        self.consistent[window] = self.consistent.get(window, 0) + int(agreed)
        self.late_seconds[window] = self.late_seconds.get(window, 0.0) + max(late_s, 0.0)
        self.checks += 1


# Leases the due samples of one window (one key, so Cluster-safe): a claimed sample's score
# becomes the lease's end, when it falls due again unless the run settled it first.
# ARGV: now, limit, the lease's end. Returns the claimed members.
CLAIM: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], member)
end
return due
"""
# Longer than a run can last: the check task's hard time limit (workers/routing.py
# CHECK_CONSISTENCY, 20 s; a test holds them in that order), so a live run's claims are never
# claimed again by the next run.
CLAIM_LEASE_S: Final = 30.0


class Samples:
    """Records sampled writes and hands due checks to the monitor; one per process
    (services.Services.consistency)."""

    def __init__(
        self, keys: Keys, config: MonitorConfig, chance: Callable[[], float] = random.random
    ) -> None:
        self.keys = keys
        self.config = config
        self._chance = chance
        self.counts_key = keys.system("consistency", "counts")
        self.recent_key = keys.system("consistency", "inconsistent")

    def due_key(self, window: float | str) -> str:
        name = window if isinstance(window, str) else window_name(window)
        return self.keys.system("consistency", "due", name)

    # --- at the write ----------------------------------------------------------------------
    def pick(
        self, change: str, written: Iterable[tuple[int, int | None]], now: float | None = None
    ) -> list[Sample]:
        """The sampled ones of ``written`` (member id, version), at most max_per_write."""
        if self.config.rate <= 0:
            return []
        acked = time.time() if now is None else now
        picked: list[Sample] = []
        for member_id, version in written:
            if self._chance() < self.config.rate:
                picked.append(Sample(int(member_id), version, acked, change, uuid.uuid4().hex))
                if len(picked) >= self.config.max_per_write:
                    break
        return picked

    def _stage(self, pipe: Any, samples: Sequence[Sample]) -> None:
        for window in self.config.windows:
            key = self.due_key(window)
            pipe.zadd(key, {s.encode(): s.acked_at + window for s in samples})
            pipe.zremrangebyrank(key, 0, -(self.config.max_samples + 1))
        pipe.hincrby(self.counts_key, "sampled", len(samples))

    def _dropped(self, replies: Sequence[Any]) -> int:
        return sum(int(r) for r in replies[1 : 2 * len(self.config.windows) : 2])

    def record(
        self, redis: SyncRedis, change: str, written: Iterable[tuple[int, int | None]]
    ) -> int:
        """Record the sampled ones of ``written``: one round trip when any is sampled.
        Returns how many were recorded (0 when Redis refused: the write stands)."""
        samples = self.pick(change, written)
        if not samples:
            return 0
        try:
            pipe = redis.pipeline(transaction=False)
            self._stage(pipe, samples)
            dropped = self._dropped(pipe.execute())
            if dropped:
                redis.hincrby(self.counts_key, "dropped", dropped)
        except RedisError as exc:
            log.debug("consistency samples not recorded: %s", exc)
            return 0
        return len(samples)

    async def arecord(
        self, redis: AsyncRedis, change: str, written: Iterable[tuple[int, int | None]]
    ) -> int:
        """:meth:`record` for asyncio processes (the API)."""
        samples = self.pick(change, written)
        if not samples:
            return 0
        try:
            pipe = redis.pipeline(transaction=False)
            self._stage(pipe, samples)
            dropped = self._dropped(await pipe.execute())
            if dropped:
                await redis.hincrby(self.counts_key, "dropped", dropped)
        except RedisError as exc:
            log.debug("consistency samples not recorded: %s", exc)
            return 0
        return len(samples)

    # --- at the check ----------------------------------------------------------------------
    def claim(self, redis: SyncRedis, window: float, now: float, limit: int) -> list[Sample]:
        """Up to ``limit`` samples due in ``window`` by ``now``, leased to the caller: each
        falls due again CLAIM_LEASE_S later unless :meth:`settle` takes it off first. So a
        run that dies, or whose reply a failover loses, leaves its checks to a later run:
        made late, not lost. One round trip; the script is atomic, so no sample is claimed
        by two monitors at once."""
        if limit <= 0:
            return []
        key = self.due_key(window)
        lease = redis.register_script(CLAIM)
        raw = cast("list[bytes]", lease(keys=[key], args=[now, limit, now + CLAIM_LEASE_S]))
        claimed: list[Sample] = []
        for member in raw:
            try:
                claimed.append(Sample.decode(member))
            except (ValueError, KeyError, TypeError):
                log.warning("consistency: an unreadable sample was dropped: %r", member[:200])
                redis.zrem(key, member)
        return claimed

    def settle(
        self,
        redis: SyncRedis,
        window: float,
        checked: Sequence[Sample],
        later: Sequence[Sample] = (),
    ) -> None:
        """Take checked samples off the due set and put ``later`` ones in, due when they say,
        in one transaction on the one key: a recheck is never lost, nor left twice. ``later``:
        samples waiting for a later change (due one window after the check that saw it), or
        claimed ones whose check could not be made (due as they were, before their lease
        ends: claimed by the next run and counted late)."""
        if not checked and not later:
            return
        key = self.due_key(window)
        pipe = redis.pipeline(transaction=True)
        if checked:
            pipe.zrem(key, *(s.encode() for s in checked))
        if later:
            pipe.zadd(key, {s.encode(): s.due(window) for s in later})
        pipe.execute()

    def count(self, redis: SyncRedis, tally: Tally, *, run_done: bool = True) -> None:
        """Add a tally (a batch of a run, or the run's end with its seconds) to the
        counters, and its inconsistencies to the list."""
        pipe = redis.pipeline(transaction=False)
        for window, checked in tally.checked.items():
            pipe.hincrby(self.counts_key, f"{window}:checked", checked)
            pipe.hincrby(self.counts_key, f"{window}:consistent", tally.consistent[window])
            pipe.hincrbyfloat(self.counts_key, f"{window}:late_seconds", tally.late_seconds[window])
        pipe.hincrby(self.counts_key, "checks", tally.checks)
        pipe.hincrby(self.counts_key, "rechecks", tally.rechecks)
        pipe.hincrby(self.counts_key, "db_reads", tally.db_reads)
        pipe.hincrbyfloat(self.counts_key, "check_seconds", tally.seconds)
        pipe.hincrby(self.counts_key, "runs", int(run_done))
        if tally.inconsistencies:
            pipe.lpush(self.recent_key, *(json.dumps(i.as_dict()) for i in tally.inconsistencies))
            pipe.ltrim(self.recent_key, 0, RECENT_KEPT - 1)
        pipe.execute()

    # --- the figures ---------------------------------------------------------------------------
    def read(self, redis: SyncRedis) -> dict[str, Any]:
        """The counters, pending checks per window and the newest inconsistencies (one round
        trip), summarised by :func:`summary`."""
        pipe = redis.pipeline(transaction=False)
        self._stage_read(pipe)
        return self._summarise(pipe.execute())

    async def aread(self, redis: AsyncRedis) -> dict[str, Any]:
        """:meth:`read` for asyncio processes (the API's /metrics and Prometheus text)."""
        pipe = redis.pipeline(transaction=False)
        self._stage_read(pipe)
        return self._summarise(await pipe.execute())

    def _stage_read(self, pipe: Any) -> None:
        pipe.hgetall(self.counts_key)
        for window in self.config.windows:
            pipe.zcard(self.due_key(window))
        pipe.lrange(self.recent_key, 0, 19)

    def _summarise(self, replies: Sequence[Any]) -> dict[str, Any]:
        counts, *pending, recent = replies
        names = map(window_name, self.config.windows)
        return summary(
            _text_map(counts),
            self.config.windows,
            dict(zip(names, map(int, pending), strict=True)),
            [json.loads(item) for item in recent],
        )


def _text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


def nines(consistent: int, checked: int) -> float | None:
    """How many nines the share of consistent checks has (0.999 -> 3.0); None before any
    check. All consistent: the nines the sample size can show, log10(checked)."""
    if checked <= 0:
        return None
    if consistent >= checked:
        return round(math.log10(checked), 2)
    return round(-math.log10(1 - consistent / checked), 2)


def summary(
    counts: Mapping[str, str],
    windows: Sequence[float],
    pending: Mapping[str, int] | None = None,
    recent: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The monitor's figures from its counters: per window the checked and consistent
    samples, their ratio and nines, the average lateness of the checks; its own cost."""

    def number(name: str) -> float:
        return float(counts.get(name, 0) or 0)

    per_window: dict[str, Any] = {}
    for window in map(window_name, windows):
        checked = int(number(f"{window}:checked"))
        consistent = int(number(f"{window}:consistent"))
        per_window[window] = {
            "checked": checked,
            "consistent": consistent,
            "inconsistent": checked - consistent,
            "ratio": consistent / checked if checked else None,
            "nines": nines(consistent, checked),
            "all_consistent": checked > 0 and consistent == checked,
            "late_s_avg": round(number(f"{window}:late_seconds") / checked, 3) if checked else None,
            "pending": (pending or {}).get(window, 0),
        }
    return {
        "windows": per_window,
        "sampled": int(number("sampled")),
        "dropped": int(number("dropped")),
        "checks": int(number("checks")),
        "rechecks": int(number("rechecks")),
        "check_seconds": round(number("check_seconds"), 4),
        "db_reads": int(number("db_reads")),
        "runs": int(number("runs")),
        "recent_inconsistencies": list(recent),
    }
