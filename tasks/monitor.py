"""The consistency monitor's checks: do cached copies agree with the database 1, 10 and 60 s
after a write was acknowledged? (The task, tasks/consistency.py, runs :meth:`Monitor.run`
every second from beat.)

Each run claims the checks that fell due (cache.consistency.Samples: at most
``CONSISTENCY_MAX_CHECKS`` per run, the shortest window first), then:

1. reads the sampled members from PostgreSQL (one query), *before* any cache: a write that
   lands between the two reads makes the cache newer than the row read, never older;
2. reads every cached copy of each member in one pipelined GETRANGE of envelope headers:
   the record of every RECORD kind (``Kind.key``), and the current entry (generations
   included) of every tagged ENTRY kind the sample's change invalidates (cache.kinds);
3. with ``CONSISTENCY_PROBE_URL``, asks the API for the member as a reader would: the answer
   comes from that API process's near tier, else Redis, else the database. The near tier is
   per API process (kept exact by CLIENT TRACKING), so one probed process plus Redis's copy
   stand for all of them.

Agreement, per copy::

    record      cached version >= the database's (newer: a write after our database read);
                a cached "not found" agrees only with a deleted row, or a newer delete;
                no copy at all agrees (the next read loads the row)
    entry       computed (created-at) after the member's updated-at: a current entry
                computed before the write never saw it (its tag was not bumped)
    API answer  as a record, from the body's version (404: not found)

Response entries (member list pages) are keyed by a digest of each request under their tag's
generation: they retire by the same bump as the entries checked in step 2 and are not read
one by one.

A sample is consistent in a window when every copy agrees; each disagreement is logged (key,
cached version, database version) and kept in the counters' list. The run's own cost (checks
and seconds) is added to the counters beside the figures.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cache import CacheService
from cache.client import SyncRedis
from cache.codec import HEADER_SIZE, Header, read_header
from cache.consistency import (
    Inconsistency,
    MonitorConfig,
    Sample,
    Samples,
    Tally,
    window_name,
)
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Change, Kind, Storage
from db import queries
from db.errors import DataError

log = logging.getLogger("tasks.monitor")

PROBE_TIMEOUT_S: Final = 1.0
# A run checks due samples BATCH at a time (claimed, checked, counted) for at most
# RUN_BUDGET_S, well inside its soft time limit (workers/routing.py CHECK_CONSISTENCY); what is
# still due waits for the next run, a second later.
BATCH: Final = 50
RUN_BUDGET_S: Final = 4.0
RECORD_KINDS: Final = tuple(kind for kind in KINDS if kind.storage is Storage.RECORD)


@dataclass(frozen=True, slots=True)
class Due:
    window: str
    late_s: float  # how long after its due time the check ran
    sample: Sample


def _entry_kinds(change: str) -> tuple[Kind, ...]:
    return tuple(
        kind
        for kind in KINDS.invalidated_by(Change(change))
        if kind.storage is Storage.ENTRY and kind.tags
    )


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(str(value)).timestamp()


def record_agrees(cached: Header | None, row: dict[str, Any] | None) -> bool:
    """A cached record against the database row read just before it (see the module doc)."""
    if cached is None:
        return True
    if row is None:
        return cached.not_found
    if cached.not_found:
        return cached.version > int(row["version"])  # a delete newer than the row read
    return cached.version >= int(row["version"])


def probe_client(config: MonitorConfig) -> httpx.Client | None:
    """The HTTP client of the API probe; None when CONSISTENCY_PROBE_URL is empty."""
    if not config.probe_url:
        return None
    return httpx.Client(base_url=config.probe_url, timeout=PROBE_TIMEOUT_S)


class Monitor:
    """One worker process's monitor: its Redis (cache and durable roles), its engine, its
    optional API probe."""

    def __init__(
        self,
        cache: CacheService,
        durable: SyncRedis,
        engine: Engine,
        samples: Samples,
        probe: httpx.Client | None = None,
    ) -> None:
        self.cache = cache
        self.durable = durable
        self.engine = engine
        self.samples = samples
        self.probe = probe
        self._deadline = 0.0  # of the run in progress: probes past it are skipped
        self._held: list[Due] = []  # claimed, not checked, not yet put back (Redis away)

    def claim(self, now: float, limit: int) -> list[Due]:
        found: list[Due] = []
        for window in self.samples.config.windows:
            for sample in self.samples.claim(self.durable, window, now, limit - len(found)):
                late = now - (sample.acked_at + window)
                found.append(Due(window_name(window), late, sample))
        return found

    def run(self, now: float | None = None) -> dict[str, Any]:
        """Claim the due checks in batches, check and count each batch, until none is due,
        ``max_checks`` were made or RUN_BUDGET_S has passed: the run's figures. A batch whose
        check fails (Redis or the database away) is put back for a later run, counted late."""
        started = time.perf_counter()
        self._deadline = started + RUN_BUDGET_S
        if self._held:
            self._requeue(())
        total = Tally.empty()
        budget = self.samples.config.max_checks
        while budget > 0 and time.perf_counter() < self._deadline:
            due = self.claim(time.time() if now is None else now, min(BATCH, budget))
            if not due:
                break
            batch = Tally.empty()
            try:
                self.check(due, batch)
            except (RedisError, DataError):
                self._requeue(due)
                raise
            self.samples.count(self.durable, batch, run_done=False)
            self._log(batch)
            total.merge(batch)
            budget -= len(due)
        total.seconds = time.perf_counter() - started
        self.samples.count(self.durable, Tally.empty(seconds=total.seconds), run_done=True)
        return {
            "checks": total.checks,
            "checked": total.checked,
            "consistent": total.consistent,
            "inconsistencies": [i.as_dict() for i in total.inconsistencies],
            "seconds": round(total.seconds, 4),
        }

    def _requeue(self, due: Sequence[Due]) -> None:
        """A batch that could not be checked goes back to its due sets; with Redis away it
        is held by this process and put back by its next run (lost only with the process)."""
        held, self._held = [*self._held, *due], []
        for window in self.samples.config.windows:
            name = window_name(window)
            mine = [item for item in held if item.window == name]
            try:
                self.samples.requeue(self.durable, window, [item.sample for item in mine])
            except RedisError:
                self._held.extend(mine)

    @staticmethod
    def _log(tally: Tally) -> None:
        for found in tally.inconsistencies:
            log.warning(
                "inconsistent %s s after the write: key=%s tier=%s cached=%s database=%s",
                found.window,
                found.key,
                found.tier,
                found.cached,
                found.database,
            )

    def check(self, due: Sequence[Due], tally: Tally) -> None:
        ids = {d.sample.member_id for d in due}
        with Session(self.engine) as session:
            rows = queries.members_by_ids(session, ids)
        tally.db_reads += 1
        keys = self.cache.keys
        copies: dict[str, Header | None] = {}
        wanted: list[str] = [kind.key(keys, [i]) for kind in RECORD_KINDS for i in sorted(ids)]
        entry_keys: dict[str, list[str]] = {}
        for change in {d.sample.change for d in due}:
            entry_keys[change] = self._current_entries(_entry_kinds(change))
            wanted.extend(entry_keys[change])
        pipe = self.cache.clients.writer.pipeline(transaction=False)
        for key in dict.fromkeys(wanted):
            pipe.getrange(key, 0, HEADER_SIZE - 1)
        for key, raw in zip(dict.fromkeys(wanted), pipe.execute(), strict=True):
            copies[key] = read_header(raw)
        for item in due:
            found = self._disagreements(item, rows, copies, entry_keys[item.sample.change])
            tally.add(item.window, not found, item.late_s)
            tally.inconsistencies.extend(found)

    def _current_entries(self, kinds: Sequence[Kind]) -> list[str]:
        tags = tuple(dict.fromkeys(tag for kind in kinds for tag in kind.tags))
        gens = generations_sync(self.cache, tags) if tags else ()
        if gens is None:
            raise RedisError("the generations could not be read")
        by_tag = dict(zip(tags, gens, strict=True))
        return [key for kind in kinds for key in kind.variant_keys(self.cache.keys, by_tag)]

    def _disagreements(
        self,
        item: Due,
        rows: dict[int, dict[str, Any]],
        copies: dict[str, Header | None],
        entries: Sequence[str],
    ) -> list[Inconsistency]:
        member_id = item.sample.member_id
        row = rows.get(member_id)
        db_version = None if row is None else int(row["version"])
        found: list[Inconsistency] = []

        def disagree(key: str, tier: str, cached: Any, database: Any) -> None:
            found.append(Inconsistency(item.window, member_id, key, tier, cached, database))

        for kind in RECORD_KINDS:
            key = kind.key(self.cache.keys, [member_id])
            header = copies.get(key)
            if not record_agrees(header, row):
                shown = "not found" if header is not None and header.not_found else None
                disagree(key, "redis", shown or (header.version if header else None), db_version)
        updated_at = _epoch(row["updated_at"]) if row is not None else None
        for key in entries:
            header = copies.get(key)
            if header is not None and updated_at is not None and header.created_at < updated_at:
                disagree(key, "redis", _iso(header.created_at), _iso(updated_at))
        if self.probe is not None:
            found.extend(self._probe(item, row))
        return found

    def _probe(self, item: Due, row: dict[str, Any] | None) -> list[Inconsistency]:
        member_id = item.sample.member_id
        url = f"/api/v1/members/{member_id}"
        if self.probe is None or time.perf_counter() > self._deadline:
            return []  # no probe, or the run's time is up: Redis's copies were checked
        try:
            answer = self.probe.get(url)
        except httpx.HTTPError as exc:
            log.debug("consistency probe of %s failed: %s", url, exc)
            return []  # an API that does not answer is not a stale copy
        shown: int | str
        if answer.status_code == 404:
            header, shown = Header(0.0, 0, True), "not found"  # agrees with a deleted row only
        elif answer.status_code == 200:
            version = int(answer.json()["version"])
            header, shown = Header(0.0, version, False), version
        else:
            return []
        if record_agrees(header, row):
            return []
        database = None if row is None else int(row["version"])
        return [Inconsistency(item.window, member_id, url, "api", shown, database)]


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
