"""Write-behind of member activity: counters in Redis now, rows in the database exactly once.

``WriteBehind.record(events)`` is one Lua script per accepted write: it bumps the cached
counters (a hash per member per day: cache data with a TTL) and XADDs each event to a stream
with no TTL, which a ``volatile-*`` eviction policy never takes. Past ``max_backlog`` unflushed
entries, or when Redis is out of memory, it raises :class:`Backpressure` (the API's 503).
:class:`GroupRecorder` lets concurrent callers share one script call.

A :class:`Flusher` drains the stream through one consumer group: it coalesces a batch per
(member, day) and hands it to ``apply``, which upserts it and records the batch's last stream
id in the same transaction; only then are the entries acknowledged and trimmed, so the stream
length is the backlog. Exactly-once rests on one rule: batches are applied in stream order.
The fetch script enforces it atomically. It serves the group's pending entries first, as an
ordered prefix (the caller's own, then those of consumers idle for ``claim_idle_ms``), and
hands out new entries only while no other consumer holds any: the pending list is the flush
lock. XAUTOCLAIM is not used: it claims idle entries past a live holder's fresh one.

``apply`` raises :class:`BatchOverlap` when the database holds part of the batch (a stalled
holder committed another cut of the same entries): the rest is applied. It raises
:class:`Unwritable` for rows that can never be written: their events go to the dead-letter
stream (listed, replayed, discarded) and the rest is applied.

    CacheError
    ├── Backpressure     backlog at its limit or Redis out of memory: nothing recorded
    ├── InvalidEvent     malformed, too old or in the future (also a ValueError)
    ├── Unwritable       raised by apply: rows that can never be written
    └── BatchOverlap     raised by apply: the database holds the batch up to an id
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Final, NamedTuple

from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from cache.client import SyncRedis
from cache.errors import CacheError, CacheUnavailable
from cache.keys import Keys

KINDS: Final = {"login": "l", "checkin": "c", "page_view": "p"}  # kind -> wire code and field
GROUP: Final = "flushers"
DAY_MS: Final = 86_400_000
_SLOT: Final = {"l": 0, "c": 1, "p": 2}
_CODE: Final = {b"l": "l", b"c": "c", b"p": "p"}
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)


class Backpressure(CacheError):
    """The backlog is at its limit, or Redis is out of memory; nothing was recorded."""


class InvalidEvent(CacheError, ValueError):
    """An event that can never be recorded as given."""


class Unwritable(CacheError):
    """Rows that can never be written: these members' rows, or, when none is named, some row
    of the batch (the flusher halves the batch to find the event)."""

    def __init__(self, member_ids: Iterable[int], reason: str) -> None:
        self.member_ids = frozenset(member_ids)
        super().__init__(reason)


class BatchOverlap(CacheError):
    def __init__(self, applied_through: str) -> None:
        self.applied_through = applied_through
        super().__init__(f"batch overlaps entries applied through {applied_through}")


@dataclass(frozen=True)
class WriteBehindConfig:
    max_backlog: int = 500_000  # ~80 B an entry: ~40 MB of Redis before writers get 503
    batch_size: int = 2_000  # events per upsert: few commits, row locks held ~tens of ms
    linger_ms: int = 50  # a small batch waits this long to grow: bounds lag, saves commits
    block_ms: int = 100  # idle wait for new entries; below the client's socket timeout
    claim_idle_ms: int = 60_000  # a holder silent this long is dead; above the DB tx timeout
    counter_ttl_s: int = 8 * 86_400  # counters outlive the oldest day an event may still hit
    max_event_age_s: int = 7 * 86_400  # older events are refused: their day left the cache
    max_future_s: int = 300  # clock skew tolerated between the API and its clients

    @classmethod
    def from_settings(cls, settings: Any) -> WriteBehindConfig:
        """The ``writebehind_<field>`` settings that exist; defaults for the others."""
        fields = cls.__dataclass_fields__
        return cls(**{n: getattr(settings, f"writebehind_{n}") for n in fields
                      if hasattr(settings, f"writebehind_{n}")})  # fmt: skip


class ActivityEvent(NamedTuple):
    member_id: int
    kind: str  # login | checkin | page_view
    at: dt.datetime | None = None  # timezone-aware; None: now
    times: int = 1


class StreamEvent(NamedTuple):
    id: str
    member_id: int
    code: str  # a KINDS value
    at_ms: int
    times: int


class ActivityRow(NamedTuple):
    """Summed deltas of one member_activity_daily row, and the newest sighting."""

    member_id: int
    day: dt.date
    logins: int
    checkins: int
    page_views: int
    last_seen_at: dt.datetime


class Batch(NamedTuple):
    source: str  # new | pending (own or claimed) | busy (another consumer holds) | empty
    events: list[StreamEvent]
    rejects: list[tuple[str, str]]  # (entry id, reason) of entries that do not parse


@dataclass(frozen=True)
class Health:
    backlog: int  # accepted, not yet flushed
    pending: int  # of which delivered to a flusher, not yet acknowledged
    lag_seconds: float  # age of the oldest unflushed entry
    dead_letters: int
    max_backlog: int

    @property
    def saturated(self) -> bool:
        return self.backlog >= self.max_backlog


Apply = Callable[[str, str, str, Sequence[ActivityRow]], bool]
"""apply(stream, first_id, last_id, rows): False when the batch was applied before."""


def stream_id(value: str) -> tuple[int, int]:
    """The (ms, seq) pair a stream id is ordered by."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entries(raw: Any) -> tuple[list[StreamEvent], list[tuple[str, str]]]:
    """Stream entries as events; those that do not parse come back as (id, reason)."""
    events, rejects = [], []
    for entry in raw or ():
        if not entry:
            continue
        try:
            f = entry[1]
            if len(f) == 8 and f[0] == b"m" and f[2] == b"k" and f[4] == b"t" and f[6] == b"n":
                member, code, at, n = int(f[1]), _CODE[f[3]], int(f[5]), int(f[7])
            else:  # written by hand or by an older version: slower, same checks
                d = dict(zip(f[::2], f[1::2], strict=True))
                member, code, at, n = int(d[b"m"]), _CODE[d[b"k"]], int(d[b"t"]), int(d[b"n"])
            events.append(StreamEvent(_text(entry[0]), member, code, at, n))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            rejects.append((_text(entry[0]), f"unparseable entry: {exc!r}"))
    return events, rejects


def coalesce(events: Iterable[StreamEvent]) -> list[ActivityRow]:
    """Events of one (member, day) become one row of summed deltas and the newest sighting.

    Sorted by (member, day), so concurrent upserts lock rows in one order.
    """
    acc: dict[tuple[int, int], list[int]] = {}
    for _, member, code, at, n in events:
        slot = acc.get((member, at // DAY_MS))
        if slot is None:
            slot = acc[(member, at // DAY_MS)] = [0, 0, 0, at]
        elif at > slot[3]:
            slot[3] = at
        slot[_SLOT[code]] += n
    days: dict[int, dt.date] = {}
    rows = []
    for (member, day), (logins, checkins, views, seen) in sorted(acc.items()):
        date = days.get(day) or days.setdefault(day, (_EPOCH + day * DAY_MS * _MS).date())
        rows.append(ActivityRow(member, date, logins, checkins, views, _EPOCH + seen * _MS))
    return rows


# KEYS: stream, one counter hash per event. ARGV: limit, ttl ms, then per event member, code,
# at ms, times. {1, ids} or {0, backlog}. With the shebang and no allow-oom, Redis refuses
# the script up front when out of memory, never half-way.
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
# ms, mode, cursor. Modes: claim (the pending prefix only), resume (the pending prefix, else
# new entries), next (the caller's pending entries after the cursor, its last batch, else new;
# refused while another consumer holds entries). allow-oom: flushing is what frees memory.
_FETCH: Final = """#!lua flags=allow-oom
local stream, group, me, count, mode = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local function claimed(ids)
  local out = {}
  for i = 1, #ids, 500 do
    local part = redis.call('XCLAIM', stream, group, me, 0, unpack(ids, i, math.min(i + 499, #ids)))
    for _, e in ipairs(part) do out[#out + 1] = e end
  end
  return {'pending', out}
end
local ids = {}
if mode == 'next' then
  for _, c in ipairs(redis.call('XPENDING', stream, group)[4] or {}) do
    if c[1] ~= me then return {'busy', c[1]} end
  end
  for _, p in ipairs(redis.call('XPENDING', stream, group, '(' .. ARGV[6], '+', count)) do
    ids[#ids + 1] = p[1]
  end
  if #ids > 0 then return claimed(ids) end
else
  local pel = redis.call('XPENDING', stream, group, '-', '+', count)
  for _, p in ipairs(pel) do
    if p[2] ~= me and p[3] < tonumber(ARGV[4]) then break end
    ids[#ids + 1] = p[1]
  end
  if #ids > 0 then return claimed(ids) end
  if #pel > 0 then return {'busy', pel[1][2]} end
  if mode == 'claim' then return {'empty', ''} end
end
local new = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', stream, '>')
if new then return {'new', new[1][2]} end
local info = redis.call('XINFO', 'STREAM', stream)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return {'empty', info[i + 1]} end
end
return {'empty', '0-0'}
"""

# Acknowledge, dead-lettering entries given an error (fields copied as found), then drop the
# settled prefix with one XTRIM MINID (XDEL costs ~5 us an entry): up to the newest id given,
# never past an entry still pending or not yet delivered. A script, not MULTI: Redis refuses
# MULTI when out of memory, and this is what frees memory.
# KEYS: stream, dead-letter stream. ARGV: group, newest id, then (id, error) pairs.
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
local stream, group, ids = KEYS[1], ARGV[1], {}
for i = 3, #ARGV, 2 do
  local id, err = ARGV[i], ARGV[i + 1]
  if err ~= '' then
    local e = redis.call('XRANGE', stream, id, id)[1]
    local f = {'id', id, 'error', err}
    if e then for j = 1, #e[2] do f[#f + 1] = e[2][j] end end
    redis.call('XADD', KEYS[2], '*', unpack(f))
    redis.call('XDEL', stream, id)
  end
  ids[#ids + 1] = id
  if #ids == 500 or i + 1 >= #ARGV then
    redis.call('XACK', stream, group, unpack(ids))
    ids = {}
  end
end
local cut = after(ARGV[2])
local first = redis.call('XPENDING', stream, group, '-', '+', 1)[1]
if first and before(first[1], cut) then cut = first[1] end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, last
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then last = g[j + 1] end
  end
  if name == group and before(after(last), cut) then cut = after(last) end
end
redis.call('XTRIM', stream, 'MINID', cut)
"""

# KEYS: dead-letter stream, stream. ARGV: dead-letter ids. Re-queues each one's event;
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
    """The buffer: record, read in order, acknowledge, dead-letter, health."""

    def __init__(self, client: SyncRedis, keys: Keys, config: WriteBehindConfig) -> None:
        self.client, self.keys, self.config = client, keys, config
        self.stream = keys.writebehind("stream")
        self.dead = keys.writebehind("dead")
        self._record = client.register_script(_RECORD)
        self._fetch = client.register_script(_FETCH)
        self._settle = client.register_script(_SETTLE)
        self._replay = client.register_script(_REPLAY)
        self._days: dict[int, str] = {}

    def _day(self, day_no: int) -> str:
        if (text := self._days.get(day_no)) is None:
            text = self._days[day_no] = (_EPOCH + day_no * DAY_MS * _MS).date().isoformat()
        return text

    def counter_key(self, member_id: int, day_no: int) -> str:
        return self.keys.writebehind("day", member_id, self._day(day_no))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OutOfMemoryError as exc:
            raise Backpressure(f"redis is out of memory: {exc}") from exc
        except RedisError as exc:
            raise CacheUnavailable(f"write-behind: {type(exc).__name__}: {exc}") from exc

    # --- producers --------------------------------------------------------------------------
    def record(self, events: Sequence[ActivityEvent], *, now: float | None = None) -> list[str]:
        """Count and enqueue the events in one atomic step; their stream ids."""
        keys, args = self.encode(events, time.time() if now is None else now)
        return self.send(keys, args) if keys else []

    def encode(self, events: Sequence[ActivityEvent], now: float) -> tuple[list[str], list[Any]]:
        """The record script's counter keys and arguments for the events (InvalidEvent)."""
        now_ms = int(now * 1000)
        oldest = now_ms - self.config.max_event_age_s * 1000
        newest = now_ms + self.config.max_future_s * 1000
        keys: list[str] = []
        args: list[Any] = []
        for event in events:
            code = KINDS.get(event.kind)
            try:
                at = now_ms if event.at is None else (event.at - _EPOCH) // _MS
            except TypeError:
                raise InvalidEvent(f"refused {event!r}: a naive datetime") from None
            if code is None or not oldest <= at <= newest or event.member_id <= 0:
                raise InvalidEvent(f"refused {event!r}: unknown kind, bad member or time")
            if not 0 < event.times <= 10_000:
                raise InvalidEvent(f"refused {event!r}: times must be 1..10000")
            keys.append(self.counter_key(event.member_id, at // DAY_MS))
            args += [event.member_id, code, at, event.times]
        return keys, args

    def send(self, keys: list[str], args: list[Any]) -> list[str]:
        limit = self.config.max_backlog
        head = [limit, self.config.counter_ttl_s * 1000]
        ok, detail = self._call(self._record, keys=[self.stream, *keys], args=head + args)
        if not ok:
            raise Backpressure(f"write-behind backlog {detail} at its limit of {limit}")
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
                rows.append(
                    {"day": self._day(day_no)} | {k: got.get(c, 0) for k, c in KINDS.items()}
                )
        last = _EPOCH + seen * _MS if seen else None
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

    def _fetch_ordered(
        self, consumer: str, count: int, idle_ms: int, mode: str, cursor: str = ""
    ) -> Any:
        args = [GROUP, consumer, count, idle_ms, mode, cursor]
        try:
            source, payload = self._call(self._fetch, keys=[self.stream], args=args)
        except CacheUnavailable as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()  # the stream was lost (a restart without persistence)
            source, payload = self._call(self._fetch, keys=[self.stream], args=args)
        return _text(source), payload

    def read_batch(
        self,
        consumer: str,
        max_count: int,
        block_ms: int = 0,
        *,
        min_idle_ms: int | None = None,
        after: str | None = None,
    ) -> Batch:
        """The next entries in stream order. Without ``after``, the pending prefix first (own,
        then stale), else new entries. With ``after``, the id of the caller's last batch (still
        in flight), the caller's entries after it, else new ones."""
        idle = self.config.claim_idle_ms if min_idle_ms is None else min_idle_ms
        mode, cursor = ("resume", "") if after is None else ("next", after)
        source, payload = self._fetch_ordered(consumer, max_count, idle, mode, cursor)
        if source == "empty" and block_ms > 0:
            # Wake on the first entry after the last one generated, then fetch in order.
            self._call(self.client.xread, {self.stream: payload}, count=1, block=block_ms)
            source, payload = self._fetch_ordered(consumer, max_count, idle, mode, cursor)
        if source in ("busy", "empty"):
            return Batch(source, [], [])
        return Batch(source, *parse_entries(payload))

    def claim_stale(self, consumer: str, min_idle_ms: int, max_count: int = 1000) -> Batch:
        """Claim the ordered prefix of pending entries held by consumers idle that long."""
        source, payload = self._fetch_ordered(consumer, max_count, min_idle_ms, "claim")
        return (
            Batch(source, *parse_entries(payload)) if source == "pending" else Batch(source, [], [])
        )

    def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge flushed entries and trim them from the stream (also out of memory)."""
        self._settle_ids(ids, "")

    def dead_letter(self, ids: Sequence[str], error: str) -> None:
        """Move entries to the dead-letter stream with the error, acknowledging them."""
        self._settle_ids(ids, error[:500] or "unwritable")

    def _settle_ids(self, ids: Sequence[str], error: str) -> None:
        if ids:
            newest = max(ids, key=stream_id)
            args = [GROUP, newest, *(part for entry_id in ids for part in (entry_id, error))]
            self._call(self._settle, keys=[self.stream, self.dead], args=args)

    def dead_letters(self, count: int = 100, after: str = "-") -> list[dict[str, str]]:
        """Dead-lettered entries, oldest first: their dead-letter id and fields."""
        raw = self._call(self.client.xrange, self.dead, after, "+", count)
        return [{"dead_id": _text(i)} | {_text(k): _text(v) for k, v in f.items()} for i, f in raw]

    def replay(self, dead_ids: Sequence[str]) -> list[str]:
        """Re-queue dead-lettered events (the cache counted them already); their new ids."""
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
        lag = 0.0
        if oldest:
            lag = max(0.0, sec + usec / 1e6 - stream_id(_text(oldest[0][0]))[0] / 1000)
        count = 0 if isinstance(pending, Exception) else int(pending["pending"])  # no group yet
        return Health(int(backlog), count, lag, int(dead), self.config.max_backlog)


class GroupRecorder:
    """``record`` for many threads: concurrent calls share one script call (group commit).

    Flat combining, no thread of its own: a caller that finds no send in flight sends its
    events at once; callers arriving meanwhile queue theirs and wait, and the sender, before it
    leaves, sends everything queued (up to ``max_events`` a round trip) and hands each caller
    its own ids. A lone caller pays nothing; concurrent callers share round trips, which, not
    Redis, cap a client. A refused group (Backpressure, Redis down) fails each caller in it.
    """

    def __init__(self, wb: WriteBehind, max_events: int = 1_000) -> None:
        self.wb, self.max_events = wb, max_events
        self._queue: SimpleQueue[tuple[list[str], list[Any], Future[list[str]]]] = SimpleQueue()
        self._sending = threading.Lock()

    def record(self, events: Sequence[ActivityEvent]) -> list[str]:
        keys, args = self.wb.encode(events, time.time())
        if not keys:
            return []
        mine: Future[list[str]] = Future()
        self._queue.put((keys, args, mine))
        while self._sending.acquire(blocking=False):
            try:
                while not self._queue.empty():
                    self._send_group()
            finally:
                self._sending.release()
            if self._queue.empty():  # else a caller queued after the last look: send it too
                break
        return mine.result()

    def _send_group(self) -> None:
        group, size = [], 0
        while size < self.max_events and not self._queue.empty():
            group.append(item := self._queue.get_nowait())
            size += len(item[0])
        keys = [key for item in group for key in item[0]]
        args = [arg for item in group for arg in item[1]]
        try:
            ids = self.wb.send(keys, args)
        except Exception as exc:  # each caller of the group gets it; none waits forever
            for _, _, future in group:
                future.set_exception(exc)
            return
        start = 0
        for item_keys, _, future in group:
            future.set_result(ids[start : start + len(item_keys)])
            start += len(item_keys)


@dataclass
class FlushStats:
    batches: int = 0
    events: int = 0
    rows: int = 0
    replayed_batches: int = 0  # applied before: a crash fell between commit and acknowledgement
    overlaps: int = 0
    dead_lettered: int = 0
    failures: int = 0
    last_error: str = ""
    lags_ms: deque[int] = field(default_factory=lambda: deque(maxlen=200_000))

    def lag_quantile(self, q: float) -> float:
        """Accept-to-commit lag of recent entries, in seconds."""
        ordered = sorted(self.lags_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000 if ordered else 0.0


class Flusher:
    """Drains the stream into ``apply`` in order, in batches bounded by size and linger time.

    ``drain`` overlaps reading and coalescing the next batch with applying the current one,
    in a second thread; batches are still applied and acknowledged one after another.
    """

    def __init__(self, wb: WriteBehind, apply: Apply, consumer: str) -> None:
        self.wb, self.apply, self.consumer = wb, apply, consumer
        self.config = wb.config
        self.stats = FlushStats()

    def flush_once(self, block_ms: int | None = None) -> Batch:
        """Read one batch (pending entries first), apply it, acknowledge it."""
        batch = self._read(None, self.config.block_ms if block_ms is None else block_ms)
        if batch.events:
            self._apply(batch.events, coalesce(batch.events))
        return batch

    def drain(self, seconds: float, *, until_empty: bool = False) -> FlushStats:
        """Flush for up to ``seconds``; with ``until_empty``, until nothing is left."""
        deadline = time.monotonic() + seconds
        cursor: str | None = None  # last id read; None: resume from the pending prefix
        inflight: Future[None] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="writebehind-apply") as pool:
            try:
                while (left := deadline - time.monotonic()) > 0:
                    if cursor is None and inflight is not None:  # a resume re-reads it
                        done, inflight = inflight, None
                        done.result()
                    peek = until_empty or inflight is not None
                    batch = self._read(
                        cursor, 0 if peek else min(self.config.block_ms, int(left * 1000) + 1)
                    )
                    ids = [e.id for e in batch.events] + [entry_id for entry_id, _ in batch.rejects]
                    if batch.source == "busy":
                        cursor = None
                    elif ids:
                        cursor = max(ids, key=stream_id)
                    rows = coalesce(batch.events)
                    if inflight is not None:
                        done, inflight = inflight, None
                        done.result()
                    if batch.events:
                        inflight = pool.submit(self._apply, batch.events, rows)
                    elif until_empty and batch.source == "empty":
                        break
                    if cursor is None or 0 < len(batch.events) < self.config.batch_size:
                        time.sleep(min(left, self.config.linger_ms / 1000))
            finally:
                if inflight is not None:
                    inflight.result()
        return self.stats

    def _read(self, after: str | None, block_ms: int) -> Batch:
        size = self.config.batch_size
        batch = self.wb.read_batch(self.consumer, size, block_ms, after=after)
        for entry_id, reason in batch.rejects:
            self.wb.dead_letter([entry_id], reason)
            self.stats.dead_lettered += 1
        return batch

    def _apply(self, events: list[StreamEvent], rows: list[ActivityRow]) -> None:
        try:
            self._apply_in_order(events, rows)
        except Exception as exc:
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            raise

    def _apply_in_order(self, events: list[StreamEvent], rows: list[ActivityRow]) -> None:
        try:
            applied = self.apply(self.wb.stream, events[0].id, events[-1].id, rows)
        except BatchOverlap as exc:
            self.stats.overlaps += 1
            through = stream_id(exc.applied_through)
            self.wb.ack([e.id for e in events if stream_id(e.id) <= through])
            if rest := [e for e in events if stream_id(e.id) > through]:
                self._apply_in_order(rest, coalesce(rest))
            return
        except Unwritable as exc:
            bad = [e for e in events if e.member_id in exc.member_ids]
            if not bad and len(events) > 1:  # the culprit is unknown: halve, in stream order
                for part in (events[: len(events) // 2], events[len(events) // 2 :]):
                    self._apply_in_order(part, coalesce(part))
                return
            self.wb.dead_letter([e.id for e in bad or events], str(exc))
            self.stats.dead_lettered += len(bad or events)
            if bad and (rest := [e for e in events if e.member_id not in exc.member_ids]):
                self._apply_in_order(rest, coalesce(rest))
            return
        self.wb.ack([e.id for e in events])
        now_ms = int(time.time() * 1000)
        self.stats.lags_ms.extend(now_ms - int(e.id.partition("-")[0]) for e in events)
        self.stats.batches += 1
        self.stats.events += len(events)
        if applied:
            self.stats.rows += len(rows)
        else:
            self.stats.replayed_batches += 1
