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

**Whose change is missing.** A copy older than the *sampled write* (its version, as the write
acknowledged it) is an inconsistency at once. A copy that has the sampled write but not a
*later* change of the member is not yet one: that change is committed, but its writer may
not have told the cache yet (it is judged from its own acknowledgement, by its own sample).
Under load the gap is seconds: in a 1,000,000-member replay, member writes took up to 7 s
to be acknowledged, and each of the three inconsistencies the monitor reported was a Redis
copy one version behind the row while the API's answer for the member, read later in the
same check, already agreed: a change on its way, not a stale copy. So the sample is put back
once, with the row it saw (cache.consistency.Seen), due one window later; then the change
must show, or the copy is inconsistent (``missing="change"``). A write behind the cache's back
(no invalidation at all) is reported that way, one window late; a bulk change (no version
acknowledged) likewise.

A sample is consistent in a window when every copy agrees; each disagreement is logged (key,
cached version, database version) and kept in the counters' list. The run's own cost (checks
and seconds) is added to the counters beside the figures.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
    Seen,
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
    """Unix seconds of a row's timestamp (ISO text, or seconds already)."""
    if value is None or isinstance(value, int | float):
        return value
    return dt.datetime.fromisoformat(str(value)).timestamp()


def record_agrees(cached: Header | None, row: Mapping[str, Any] | None) -> bool:
    """A cached record against the database row read just before it (see the module doc)."""
    if cached is None:
        return True
    if row is None:
        return cached.not_found
    if cached.not_found:
        return cached.version > int(row["version"])  # a delete newer than the row read
    return cached.version >= int(row["version"])


def reflects_write(cached: Header | None, sample: Sample) -> bool:
    """Does a cached record show the sampled write itself (or a later change)?"""
    if cached is None or sample.version is None:
        return True  # no copy: the next read loads; a bulk change acknowledged no version
    if sample.change == Change.DELETE.value:
        return cached.not_found or cached.version >= sample.version
    if cached.not_found:
        return cached.version > sample.version  # deleted since
    return cached.version >= sample.version


def later_change(sample: Sample, row: Mapping[str, Any] | None) -> bool:
    """Is the database's row a change after the sampled write (or, after a bulk change,
    possibly so)? Then a copy behind it may be a change still on its way."""
    if sample.version is None:
        return True
    if row is None:
        return sample.change != Change.DELETE.value
    return int(row["version"]) > sample.version


def seen_row(seen: Seen) -> dict[str, Any] | None:
    """The row a first check saw, as the recheck compares copies with it."""
    if seen.version is None:
        return None
    return {"version": seen.version, "updated_at": seen.updated_at}


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
        # Claimed, not checked, not yet put back (Redis away): put back by the next run,
        # before their lease would bring them back (cache.consistency.CLAIM_LEASE_S).
        self._held: list[Due] = []

    def claim(self, now: float, limit: int) -> list[Due]:
        found: list[Due] = []
        for window in self.samples.config.windows:
            for sample in self.samples.claim(self.durable, window, now, limit - len(found)):
                late = now - sample.due(window)
                found.append(Due(window_name(window), late, sample))
        return found

    def run(self, now: float | None = None) -> dict[str, Any]:
        """Claim the due checks in batches, check and count each batch, until none is due,
        ``max_checks`` were made or RUN_BUDGET_S has passed: the run's figures.

        A claim is a lease (cache.consistency.Samples.claim): a batch is settled (taken off
        its due sets, its rechecks put in) before it is counted. A batch whose check fails
        (Redis or the database away) is put back for a later run, counted late; with Redis
        away this process holds it and its next run puts it back. If the process dies, or a
        failover loses the claim's reply, the lease ends and a later run makes the checks.
        Settled but not counted (Redis lost between the two): lost, never counted twice."""
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
                later = self.check(due, batch)
            except (RedisError, DataError):
                self._requeue(due)
                raise
            self._settle(due, later)
            self.samples.count(self.durable, batch, run_done=False)
            self._log(batch)
            total.merge(batch)
            budget -= len(due)
        total.seconds = time.perf_counter() - started
        self.samples.count(self.durable, Tally.empty(seconds=total.seconds), run_done=True)
        return {
            "checks": total.checks,
            "rechecks": total.rechecks,
            "checked": total.checked,
            "consistent": total.consistent,
            "inconsistencies": [i.as_dict() for i in total.inconsistencies],
            "seconds": round(total.seconds, 4),
        }

    def _settle(self, checked: Sequence[Due], later: Sequence[Due]) -> None:
        """Per window: the checked samples off its due set and the ``later`` ones in, in one
        transaction."""
        for window in self.samples.config.windows:
            name = window_name(window)
            done = [item.sample for item in checked if item.window == name]
            again = [item.sample for item in later if item.window == name]
            self.samples.settle(self.durable, window, done, again)

    def _requeue(self, due: Sequence[Due]) -> None:
        """A batch that could not be checked goes back to its due sets, due as it was; with
        Redis away it is held by this process and put back by its next run."""
        held, self._held = [*self._held, *due], []
        for window in self.samples.config.windows:
            name = window_name(window)
            mine = [item for item in held if item.window == name]
            try:
                self.samples.settle(self.durable, window, (), [item.sample for item in mine])
            except RedisError:
                self._held.extend(mine)

    @staticmethod
    def _log(tally: Tally) -> None:
        for found in tally.inconsistencies:
            log.warning(
                "inconsistent %s s after the write: key=%s tier=%s cached=%s database=%s "
                "written=%s missing=%s",
                found.window,
                found.key,
                found.tier,
                found.cached,
                found.database,
                found.written,
                found.missing,
            )

    def check(self, due: Sequence[Due], tally: Tally) -> list[Due]:
        """Check ``due`` into ``tally``; the samples to check again one window later (a copy
        behind a later change: see the module doc), not counted yet."""
        ids = {d.sample.member_id for d in due}
        with Session(self.engine) as session:
            rows = queries.members_by_ids(session, ids)
        tally.db_reads += 1
        checked_at = time.time()
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
        later: list[Due] = []
        for item in due:
            sample = item.sample
            seen = sample.seen
            row = rows.get(sample.member_id) if seen is None else seen_row(seen)
            found, behind = self._disagreements(item, row, copies, entry_keys[sample.change])
            if seen is not None:  # the later change a first check saw has not shown
                found += [replace(i, missing="change") for i in behind]
            elif behind and later_change(sample, row):
                if not found:  # the change may still be on its way: one more window
                    again = Seen(
                        None if row is None else int(row["version"]),
                        None if row is None else _epoch(row["updated_at"]),
                        checked_at + float(item.window),
                    )
                    later.append(Due(item.window, 0.0, replace(sample, seen=again)))
                    tally.rechecks += 1
                    continue
            else:  # the row is the sampled write's: a copy behind it misses the write
                found += behind
            tally.add(item.window, not found, item.late_s)
            tally.inconsistencies.extend(found)
        return later

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
        row: Mapping[str, Any] | None,
        copies: dict[str, Header | None],
        entries: Sequence[str],
    ) -> tuple[list[Inconsistency], list[Inconsistency]]:
        """The copies against ``row`` (the database's, or the one a first check saw): those
        missing the sampled write, and those that have it but are behind ``row``."""
        sample = item.sample
        member_id = sample.member_id
        db_version = None if row is None else int(row["version"])
        updated_at = None if row is None else _epoch(row["updated_at"])
        missing: list[Inconsistency] = []
        behind: list[Inconsistency] = []

        def disagree(
            key: str, tier: str, cached: Any, database: Any, *, has_write: bool = True
        ) -> None:
            found = Inconsistency(
                item.window, member_id, key, tier, cached, database, written=sample.version
            )
            (behind if has_write else missing).append(found)

        def record(key: str, tier: str, header: Header | None, shown: Any) -> None:
            if not record_agrees(header, row):
                disagree(key, tier, shown, db_version, has_write=reflects_write(header, sample))

        for kind in RECORD_KINDS:
            key = kind.key(self.cache.keys, [member_id])
            header = copies.get(key)
            shown = (
                None if header is None else ("not found" if header.not_found else header.version)
            )
            record(key, "redis", header, shown)
        for key in entries:  # an entry computed before the row's change never saw it
            header = copies.get(key)
            if header is not None and updated_at is not None and header.created_at < updated_at:
                disagree(key, "redis", _iso(header.created_at), _iso(updated_at))
        probed = self._probe(member_id)
        if probed is not None:
            record(f"/api/v1/members/{member_id}", "api", *probed)
        return missing, behind

    def _probe(self, member_id: int) -> tuple[Header, int | str] | None:
        """What a reader of the API gets for the member, as a record's header and as shown;
        None when there is no probe, the run's time is up or the API does not answer."""
        url = f"/api/v1/members/{member_id}"
        if self.probe is None or time.perf_counter() > self._deadline:
            return None  # no probe, or the run's time is up: Redis's copies were checked
        try:
            answer = self.probe.get(url)
        except httpx.HTTPError as exc:
            log.debug("consistency probe of %s failed: %s", url, exc)
            return None  # an API that does not answer is not a stale copy
        if answer.status_code == 404:
            return Header(0.0, 0, True), "not found"  # agrees with a deleted row only
        if answer.status_code == 200:
            version = int(answer.json()["version"])
            return Header(0.0, version, False), version
        return None


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
