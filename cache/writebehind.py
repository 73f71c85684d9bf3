"""Write-behind of member activity: counters in Redis now, rows in the database exactly once.

``WriteBehind.record(events)`` is one Lua script per accepted write: it bumps the cached
counters (a hash per member per day, TTL'd cache data) and XADDs each event to a stream that
carries no TTL, so a ``volatile-*`` eviction policy never takes it. Past ``max_backlog``
unflushed entries it refuses with :class:`Backpressure` (the API answers 503).

A :class:`Flusher` drains the stream through a consumer group, coalesces a batch per
(member, day) and hands it to an ``apply`` callable that upserts it and records the batch's
last stream id in the same transaction; only then are the entries acknowledged and deleted,
so the stream length is the backlog. Exactly-once rests on one ordering rule: batches are
applied in stream order. The fetch script enforces it atomically: it serves the group's pending
entries first, as an ordered prefix (the caller's own, then those of consumers idle for
``claim_idle_ms``), and reads new entries only when nothing is pending. A fresh entry held by
a live consumer blocks the others, so the pending list is the flush lock. XAUTOCLAIM is not
used: it would claim idle entries past a live holder's fresh one, out of order.

``apply`` raises :class:`BatchOverlap` when the database already holds part of the batch
(a stalled holder committed a different cut of the same entries): the rest is re-applied.
It raises :class:`Unwritable` for rows that can never be written: their events go to the
dead-letter stream (readable, replayable) and the rest is applied.

Exceptions (all :class:`cache.errors.CacheError`)::

    Backpressure     the backlog is at its limit or Redis is out of memory: retry later
    InvalidEvent     an event is malformed, too old or in the future (ValueError too)
    Unwritable       raised by apply: these members' rows can never be written
    BatchOverlap     raised by apply: the database holds the batch up to ``applied_through``
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from cache.client import SyncRedis
from cache.errors import CacheError, CacheUnavailable
from cache.keys import Keys

KINDS: Final = {"login": "l", "checkin": "c", "page_view": "p"}  # kind -> hash field / wire code
DAY_MS: Final = 86_400_000
GROUP: Final = "flushers"


class Backpressure(CacheError):
    """The backlog passed its limit (or Redis is out of memory); nothing was recorded."""


class InvalidEvent(CacheError, ValueError):
    """An event that can never be recorded as given."""


class Unwritable(CacheError):
    """Rows that can never be written: these members' (e.g. unknown members), or, when no
    member is named, something in the batch (the flusher halves it to find the event)."""

    def __init__(self, member_ids: Iterable[int], reason: str) -> None:
        self.member_ids = frozenset(member_ids)
        super().__init__(reason)


class BatchOverlap(CacheError):
    """The database already holds the batch's entries up to ``applied_through``."""

    def __init__(self, applied_through: str) -> None:
        self.applied_through = applied_through
        super().__init__(f"batch overlaps entries applied through {applied_through}")


@dataclass(frozen=True)
class WriteBehindConfig:
    """Limits of the buffer and the flusher, with the reason for each default."""

    max_backlog: int = 500_000  # ~100 B an entry: 50 MB of Redis before writers get 503
    batch_size: int = 2_000  # one upsert of ~2,000 rows takes ~15 ms: short locks, big batches
    linger_ms: int = 50  # wait this long for a small batch to grow (bounds lag, not throughput)
    block_ms: int = 100  # idle wait for new entries; below the client's socket timeout
    claim_idle_ms: int = 60_000  # a holder silent this long is dead; above the DB tx timeout
    counter_ttl_s: int = 8 * 86_400  # counters outlive the oldest day an event may still hit
    max_event_age_s: int = 7 * 86_400  # older events are refused: their day left the cache
    max_future_s: int = 300  # clock skew tolerated between the API and its clients

    @classmethod
    def from_settings(cls, settings: Any) -> WriteBehindConfig:
        """The ``writebehind_<field>`` settings that exist, defaults for the others."""
        names = cls.__dataclass_fields__
        return cls(**{n: getattr(settings, f"writebehind_{n}") for n in names
                      if hasattr(settings, f"writebehind_{n}")})  # fmt: skip


class ActivityEvent(NamedTuple):
    member_id: int
    kind: str  # login | checkin | page_view
    at: dt.datetime | None = None  # None: now
    times: int = 1  # occurrences this event stands for


class StreamEvent(NamedTuple):
    id: str
    member_id: int
    code: str  # KINDS value
    at_ms: int
    times: int


class ActivityRow(NamedTuple):
    """One row of summed deltas for member_activity_daily, plus the newest sighting."""

    member_id: int
    day: dt.date
    logins: int
    checkins: int
    page_views: int
    last_seen_at: dt.datetime


class Batch(NamedTuple):
    source: str  # new | pending (own or claimed) | busy (another consumer holds it) | empty
    events: list[StreamEvent]
    rejects: list[tuple[str, str]]  # (entry id, why) of entries that do not parse


@dataclass(frozen=True)
class Health:
    backlog: int  # entries accepted and not yet flushed
    pending: int  # of which delivered to a flusher and not acknowledged
    lag_seconds: float  # age of the oldest unflushed entry
    dead_letters: int
    max_backlog: int

    @property
    def saturated(self) -> bool:
        return self.backlog >= self.max_backlog


Apply = Callable[[str, str, str, Sequence[ActivityRow]], bool]
"""apply(stream, first_id, last_id, rows) -> False when the batch was applied before."""


def stream_id(value: str) -> tuple[int, int]:
    """A stream id as the (ms, seq) pair it is ordered by."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entries(raw: Any) -> tuple[list[StreamEvent], list[tuple[str, str]]]:
    """Stream entries as events; entries that do not parse come back as (id, reason)."""
    events, rejects = [], []
    for entry in raw or ():
        if not entry:
            continue
        entry_id = _text(entry[0])
        try:
            fields = dict(zip(entry[1][::2], entry[1][1::2], strict=True))
            code = _text(fields[b"k"])
            if code not in _FIELDS:
                raise ValueError(f"unknown kind {code!r}")
            member, at, n = int(fields[b"m"]), int(fields[b"t"]), int(fields[b"n"])
            events.append(StreamEvent(entry_id, member, code, at, n))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            rejects.append((entry_id, f"unparseable entry: {exc!r}"))
    return events, rejects


_FIELDS: Final = {"l": 0, "c": 1, "p": 2}


def coalesce(events: Iterable[StreamEvent]) -> list[ActivityRow]:
    """Many events of one (member, day) become one row of summed deltas, newest sighting kept.

    Sorted by (member, day) so concurrent upserts lock rows in one order.
    """
    acc: dict[tuple[int, int], list[int]] = {}
    for event in events:
        slot = acc.get((event.member_id, event.at_ms // DAY_MS))
        if slot is None:
            slot = acc[(event.member_id, event.at_ms // DAY_MS)] = [0, 0, 0, event.at_ms]
        slot[_FIELDS[event.code]] += event.times
        if event.at_ms > slot[3]:
            slot[3] = event.at_ms
    epoch = dt.date(1970, 1, 1)
    return [
        ActivityRow(
            member,
            epoch + dt.timedelta(days=day),
            logins,
            checkins,
            views,
            dt.datetime.fromtimestamp(seen / 1000, dt.UTC),
        )
        for (member, day), (logins, checkins, views, seen) in sorted(acc.items())
    ]


# KEYS: stream, then one counter hash per event. ARGV: limit, ttl ms, then per event
# member, code, at ms, count. Returns {1, ids} or {0, backlog}. The shebang makes Redis refuse
# it up front when out of memory, instead of part-way.
_RECORD: Final = """#!lua
local backlog = redis.call('XLEN', KEYS[1])
if backlog + #KEYS - 1 > tonumber(ARGV[1]) then return {0, backlog} end
local ids = {}
for i = 2, #KEYS do
  local a, key = 3 + (i - 2) * 4, KEYS[i]
  redis.call('HINCRBY', key, ARGV[a + 1], ARGV[a + 3])
  local seen = tonumber(redis.call('HGET', key, 's'))
  if not seen or tonumber(ARGV[a + 2]) > seen then redis.call('HSET', key, 's', ARGV[a + 2]) end
  redis.call('PEXPIRE', key, ARGV[2])
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*',
    'm', ARGV[a], 'k', ARGV[a + 1], 't', ARGV[a + 2], 'n', ARGV[a + 3])
end
return {1, ids}
"""

# The ordered fetch (module docstring). KEYS: stream. ARGV: group, consumer, count, min idle
# ms, read-new flag. Returns {source, entries | holder | last id}. allow-oom: flushing is
# what frees memory.
_FETCH: Final = """#!lua flags=allow-oom
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local pel = redis.call('XPENDING', stream, group, '-', '+', tonumber(ARGV[3]))
if #pel > 0 then
  local ids = {}
  for _, p in ipairs(pel) do
    if p[2] ~= me and p[3] < tonumber(ARGV[4]) then break end
    ids[#ids + 1] = p[1]
  end
  if #ids == 0 then return {'busy', pel[1][2]} end
  local out = {}
  for i = 1, #ids, 500 do
    local part = redis.call('XCLAIM', stream, group, me, 0,
      unpack(ids, i, math.min(i + 499, #ids)))
    for _, e in ipairs(part) do out[#out + 1] = e end
  end
  return {'pending', out}
end
if ARGV[5] ~= '1' then return {'empty', ''} end
local new = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', ARGV[3], 'STREAMS', stream, '>')
if new then return {'new', new[1][2]} end
local info = redis.call('XINFO', 'STREAM', stream)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return {'empty', info[i + 1]} end
end
return {'empty', '0-0'}
"""

# Acknowledge, dead-lettering those with an error (fields copied as they are), then drop the
# settled prefix of the stream with one XTRIM MINID (XDEL per id costs ~5 us an entry): up to
# the newest id settled here, never past an entry still pending or not yet delivered.
# A script, not MULTI: Redis refuses MULTI when out of memory, and this is what frees memory.
# KEYS: stream, dead-letter stream. ARGV: group, then (id, error) pairs; '' means flushed.
_SETTLE: Final = """#!lua flags=allow-oom
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = split(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end
local stream, group, top, ids = KEYS[1], ARGV[1], '0-0', {}
for i = 2, #ARGV, 2 do
  local id, err = ARGV[i], ARGV[i + 1]
  if err ~= '' then
    local e = redis.call('XRANGE', stream, id, id)[1]
    local f = {'id', id, 'error', err}
    if e then for j = 1, #e[2] do f[#f + 1] = e[2][j] end end
    redis.call('XADD', KEYS[2], '*', unpack(f))
    redis.call('XDEL', stream, id)
  end
  if before(top, id) then top = id end
  ids[#ids + 1] = id
  if #ids == 500 or i + 1 >= #ARGV then
    redis.call('XACK', stream, group, unpack(ids))
    ids = {}
  end
end
local cut = after(top)
local first = redis.call('XPENDING', stream, group, '-', '+', 1)[1]
if first and before(first[1], cut) then cut = first[1] end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, last
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'last-delivered-id' then last = g[j + 1] end
  end
  if name == group and before(after(last), cut) then cut = after(last) end
end
redis.call('XTRIM', stream, 'MINID', cut)
return 1
"""

# KEYS: dead-letter stream, stream. ARGV: dead-letter ids. Re-queues each entry's event;
# entries that never parsed stay where they are.
_REPLAY: Final = """#!lua
local out = {}
for _, id in ipairs(ARGV) do
  local e = redis.call('XRANGE', KEYS[1], id, id)[1]
  if e then
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    if f.m and f.k and f.t and f.n then
      out[#out + 1] = redis.call('XADD', KEYS[2], '*', 'm', f.m, 'k', f.k, 't', f.t, 'n', f.n)
      redis.call('XDEL', KEYS[1], id)
    end
  end
end
return out
"""


class WriteBehind:
    """The buffer: record, read in order, acknowledge, dead-letter, report health."""

    def __init__(self, client: SyncRedis, keys: Keys, config: WriteBehindConfig) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self.stream = keys.system("wb", "stream")
        self.dead = keys.system("wb", "dead")
        self._record = client.register_script(_RECORD)
        self._fetch = client.register_script(_FETCH)
        self._replay = client.register_script(_REPLAY)
        self._settle_script = client.register_script(_SETTLE)
        self._days: dict[int, str] = {}

    def _day(self, day_no: int) -> str:
        text = self._days.get(day_no)
        if text is None:
            text = self._days[day_no] = (
                dt.date(1970, 1, 1) + dt.timedelta(days=day_no)
            ).isoformat()
        return text

    def counter_key(self, member_id: int, day_no: int) -> str:
        return self.keys.system("wb", "day", member_id, self._day(day_no))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OutOfMemoryError as exc:
            raise Backpressure(f"redis is out of memory: {exc}") from exc
        except ResponseError as exc:
            raise CacheUnavailable(f"write-behind: {exc}") from exc
        except RedisError as exc:
            raise CacheUnavailable(f"write-behind: {type(exc).__name__}: {exc}") from exc

    # --- producers --------------------------------------------------------------------------
    def record(self, events: Sequence[ActivityEvent], *, now: float | None = None) -> list[str]:
        """Count and enqueue events atomically; their stream ids. Backpressure when full."""
        if not events:
            return []
        now_ms = int((time.time() if now is None else now) * 1000)
        oldest = now_ms - self.config.max_event_age_s * 1000
        newest = now_ms + self.config.max_future_s * 1000
        keys = [self.stream]
        args: list[Any] = [self.config.max_backlog, self.config.counter_ttl_s * 1000]
        for event in events:
            code = KINDS.get(event.kind)
            at = now_ms if event.at is None else int(event.at.timestamp() * 1000)
            if code is None or not oldest <= at <= newest or event.member_id <= 0:
                raise InvalidEvent(f"refused {event!r}: unknown kind, bad member or time")
            if not 0 < event.times <= 10_000:
                raise InvalidEvent(f"times must be 1..10000, got {event.times}")
            keys.append(self.counter_key(event.member_id, at // DAY_MS))
            args += [event.member_id, code, at, event.times]
        ok, detail = self._call(self._record, keys=keys, args=args)
        if not ok:
            raise Backpressure(f"write-behind backlog {detail} at its limit of {args[0]}")
        return [_text(entry_id) for entry_id in detail]

    def activity(self, member_id: int, *, now: float | None = None) -> dict[str, Any]:
        """Cached counters of the days an event may still reach, newest first."""
        today = int((time.time() if now is None else now) * 1000) // DAY_MS
        days = range(today, today - self.config.max_event_age_s * 1000 // DAY_MS - 1, -1)
        pipe = self.client.pipeline(transaction=False)
        for day_no in days:
            pipe.hgetall(self.counter_key(member_id, day_no))
        rows, seen = [], 0
        for day_no, raw in zip(days, self._call(pipe.execute), strict=True):
            if raw:
                got = {_text(k): int(v) for k, v in raw.items()}
                seen = max(seen, got.get("s", 0))
                counts = {kind: got.get(code, 0) for kind, code in KINDS.items()}
                rows.append({"day": self._day(day_no), **counts})
        last = dt.datetime.fromtimestamp(seen / 1000, dt.UTC) if seen else None
        return {"member_id": member_id, "days": rows, "last_seen_at": last}

    # --- consumers --------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise CacheUnavailable(f"write-behind: {exc}") from exc
        except RedisError as exc:
            raise CacheUnavailable(f"write-behind: {exc}") from exc

    def _fetch_ordered(self, consumer: str, count: int, min_idle_ms: int, new: bool) -> Any:
        args = [GROUP, consumer, count, min_idle_ms, int(new)]
        try:
            return self._call(self._fetch, keys=[self.stream], args=args)
        except CacheUnavailable as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()  # the stream was lost (restart without persistence)
            return self._call(self._fetch, keys=[self.stream], args=args)

    def read_batch(
        self, consumer: str, max_count: int, block_ms: int = 0, *, min_idle_ms: int | None = None
    ) -> Batch:
        """The next entries in stream order: pending ones first (own, then stale), else new."""
        idle = self.config.claim_idle_ms if min_idle_ms is None else min_idle_ms
        source, payload = self._fetch_ordered(consumer, max_count, idle, True)
        source = _text(source)
        if source == "empty" and block_ms > 0:
            # Wake on the first entry after the last one generated; then fetch in order.
            self._call(self.client.xread, {self.stream: payload}, count=1, block=block_ms)
            source, payload = self._fetch_ordered(consumer, max_count, idle, True)
            source = _text(source)
        if source in ("busy", "empty"):
            return Batch(source, [], [])
        return Batch(source, *parse_entries(payload))

    def claim_stale(self, consumer: str, min_idle_ms: int, max_count: int = 1000) -> Batch:
        """Claim the ordered prefix of pending entries held by consumers idle that long."""
        source, payload = self._fetch_ordered(consumer, max_count, min_idle_ms, False)
        if _text(source) != "pending":
            return Batch(_text(source), [], [])
        return Batch("pending", *parse_entries(payload))

    def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge flushed entries and drop them from the stream (also when out of memory)."""
        self._settle(ids, "")

    def dead_letter(self, ids: Sequence[str], error: str) -> None:
        """Move entries to the dead-letter stream with the error, acknowledging them."""
        self._settle(ids, error[:500] or "unwritable")

    def _settle(self, ids: Sequence[str], error: str) -> None:
        if ids:
            args = [GROUP, *(part for entry_id in ids for part in (entry_id, error))]
            self._call(self._settle_script, keys=[self.stream, self.dead], args=args)

    def dead_letters(self, count: int = 100, after: str = "-") -> list[dict[str, str]]:
        """Dead-lettered entries, oldest first: their dead-letter id and fields."""
        raw = self._call(self.client.xrange, self.dead, after, "+", count)
        return [{"dead_id": _text(i)} | {_text(k): _text(v) for k, v in f.items()} for i, f in raw]

    def replay(self, dead_ids: Sequence[str]) -> list[str]:
        """Re-queue dead-lettered events (counters were already counted); their new ids."""
        ids = self._call(self._replay, keys=[self.dead, self.stream], args=list(dead_ids))
        return [_text(i) for i in ids]

    def discard(self, dead_ids: Sequence[str]) -> int:
        return int(self._call(self.client.xdel, self.dead, *dead_ids)) if dead_ids else 0

    def health(self) -> Health:
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xrange(self.stream, "-", "+", 1)
        pipe.xlen(self.dead)
        pipe.time()
        pipe.xpending(self.stream, GROUP)
        replies = self._call(pipe.execute, raise_on_error=False)
        for reply in replies[:4]:
            if isinstance(reply, Exception):
                raise CacheUnavailable(f"write-behind: {reply}") from reply
        backlog, oldest, dead, (sec, usec), pending = replies
        if isinstance(pending, Exception):  # no group yet: nothing was ever read
            pending = {}
        lag = 0.0
        if oldest:
            lag = max(0.0, sec + usec / 1e6 - stream_id(_text(oldest[0][0]))[0] / 1000)
        count = int(pending.get("pending", 0)) if pending else 0
        return Health(int(backlog), count, lag, int(dead), self.config.max_backlog)


@dataclass
class FlushStats:
    batches: int = 0
    events: int = 0
    rows: int = 0
    replayed_batches: int = 0  # applied before (a crash between commit and acknowledgement)
    overlaps: int = 0
    dead_lettered: int = 0
    failures: int = 0
    last_error: str = ""
    lags_ms: deque[int] = field(default_factory=lambda: deque(maxlen=200_000))

    def lag_quantile(self, q: float) -> float:
        """Accept-to-commit lag of recent entries, seconds."""
        if not self.lags_ms:
            return 0.0
        ordered = sorted(self.lags_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


class Flusher:
    """Drains the stream into ``apply`` in order, bounded by batch size and linger time."""

    def __init__(self, wb: WriteBehind, apply: Apply, consumer: str) -> None:
        self.wb = wb
        self.apply = apply
        self.consumer = consumer
        self.config = wb.config
        self.stats = FlushStats()

    def flush_once(self, block_ms: int | None = None) -> Batch:
        """Read one batch (pending first), apply it, then acknowledge it."""
        wait = self.config.block_ms if block_ms is None else block_ms
        batch = self.wb.read_batch(self.consumer, self.config.batch_size, wait)
        for entry_id, reason in batch.rejects:
            self.wb.dead_letter([entry_id], reason)
            self.stats.dead_lettered += 1
        if batch.events:
            try:
                self._apply(batch.events)
            except Exception as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                raise
        return batch

    def _apply(self, events: list[StreamEvent]) -> None:
        rows = coalesce(events)
        try:
            applied = self.apply(self.wb.stream, events[0].id, events[-1].id, rows)
        except BatchOverlap as exc:
            self.stats.overlaps += 1
            through = stream_id(exc.applied_through)
            rest = [e for e in events if stream_id(e.id) > through]
            self.wb.ack([e.id for e in events if stream_id(e.id) <= through])
            if rest:
                self._apply(rest)
            return
        except Unwritable as exc:
            bad = [e for e in events if e.member_id in exc.member_ids]
            if not bad and len(events) > 1:  # the culprit is unknown: halve, in stream order
                half = len(events) // 2
                self._apply(events[:half])
                self._apply(events[half:])
                return
            bad = bad or events
            self.wb.dead_letter([e.id for e in bad], str(exc))  # acknowledged: never applied
            self.stats.dead_lettered += len(bad)
            rest = [e for e in events if e not in bad]
            if rest:
                self._apply(rest)
            return
        self.wb.ack([e.id for e in events])
        now_ms = int(time.time() * 1000)
        self.stats.lags_ms.extend(now_ms - stream_id(e.id)[0] for e in events)
        self.stats.batches += 1
        self.stats.events += len(events)
        if applied:
            self.stats.rows += len(rows)
        else:
            self.stats.replayed_batches += 1

    def drain(self, seconds: float, *, until_empty: bool = False) -> FlushStats:
        """Flush for up to ``seconds``; with ``until_empty``, stop once nothing is left."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            block = max(1, min(self.config.block_ms, int(left * 1000)))
            batch = self.flush_once(0 if until_empty else block)
            got = len(batch.events) + len(batch.rejects)
            if until_empty and batch.source == "empty":
                break
            if batch.source == "busy":
                time.sleep(min(left, self.config.linger_ms / 1000))
            elif 0 < got < self.config.batch_size:
                time.sleep(min(left, self.config.linger_ms / 1000))  # let the next batch grow
        return self.stats
