"""The data of write-behind, and the pure functions over it (no Redis, no database).

An accepted event is one stream entry with one field, ``e = "<member>,<code>,<at ms>,<times>"``:
one field instead of four quarters the strings that Redis, its Lua bridge and the client
move per entry. Entries of the earlier four-field form (``m k t n``) still parse.
:func:`coalesce_columns` sums a batch per (member, day) into :class:`ActivityRows`, integer
columns that the upsert sends as arrays, readable as :class:`ActivityRow` tuples too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, overload

KINDS: Final = {"login": "l", "checkin": "c", "page_view": "p"}  # kind -> wire code and field
GROUP: Final = "flushers"
DAY_MS: Final = 86_400_000
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE: Final = EPOCH.date()
_SLOT: Final = {"l": 0, "c": 1, "p": 2}
_CODE: Final = {b"l": "l", b"c": "c", b"p": "p"}
_DAY_BITS: Final = 20  # (member << 20) | day sorts as (member, day): days < 2**20 (year 4840)
_DAY_MASK: Final = (1 << _DAY_BITS) - 1
_MAX_AT: Final = (1 << _DAY_BITS) * DAY_MS


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
    backlog: int  # accepted, not yet flushed (every partition)
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


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def day_of(day_no: int) -> dt.date:
    return _EPOCH_DATE + dt.timedelta(days=day_no)


def entry_fields(fields: dict[str, str]) -> dict[str, str]:
    """A stored entry's fields in the four-field form (``e`` unpacked), for people to read."""
    if "e" not in fields:
        return fields
    out = {k: v for k, v in fields.items() if k != "e"}
    parts = fields["e"].split(",")
    return out | dict(zip(("m", "k", "t", "n"), parts, strict=False))


def parse_entries(raw: Any) -> tuple[list[StreamEvent], list[tuple[str, str]]]:
    """Stream entries as events; those that do not parse come back as (id, reason)."""
    events: list[StreamEvent] = []
    rejects: list[tuple[str, str]] = []
    append, code_of, new = events.append, _CODE, tuple.__new__
    for entry in raw or ():
        if not entry:
            continue
        try:
            f = entry[1]
            if len(f) == 2 and f[0] == b"e":
                m, k, t, n = f[1].split(b",")
                member, code, at, times = int(m), code_of[k], int(t), int(n)
            else:  # the four-field form, or written by hand: slower, same checks
                d = dict(zip(f[::2], f[1::2], strict=True))
                member, code, at, times = int(d[b"m"]), code_of[d[b"k"]], int(d[b"t"]), int(d[b"n"])
            if member <= 0 or not 0 <= at < _MAX_AT:
                raise ValueError("member id or time out of range")
            # tuple.__new__: a NamedTuple's own __new__ costs a Python call an entry
            append(new(StreamEvent, (entry[0].decode(), member, code, at, times)))
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            rejects.append((text(entry[0]), f"unparseable entry: {exc!r}"))
    return events, rejects


class ActivityRows(Sequence[ActivityRow]):
    """Coalesced rows as integer columns, sorted by (member, day); items are ActivityRow."""

    __slots__ = ("checkins", "days", "logins", "member_ids", "page_views", "seen_ms")

    def __init__(
        self,
        member_ids: list[int],
        days: list[int],  # days since 1970-01-01
        logins: list[int],
        checkins: list[int],
        page_views: list[int],
        seen_ms: list[int],  # newest sighting, ms since the epoch
    ) -> None:
        self.member_ids, self.days, self.logins = member_ids, days, logins
        self.checkins, self.page_views, self.seen_ms = checkins, page_views, seen_ms

    def __len__(self) -> int:
        return len(self.member_ids)

    @overload
    def __getitem__(self, index: int) -> ActivityRow: ...
    @overload
    def __getitem__(self, index: slice) -> list[ActivityRow]: ...
    def __getitem__(self, index: int | slice) -> ActivityRow | list[ActivityRow]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        seen = EPOCH + dt.timedelta(milliseconds=self.seen_ms[index])
        return tuple.__new__(
            ActivityRow,
            (self.member_ids[index], day_of(self.days[index]), self.logins[index],
             self.checkins[index], self.page_views[index], seen),
        )  # fmt: skip

    def __iter__(self) -> Iterator[ActivityRow]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def columns(self) -> tuple[list[int], list[int], list[int], list[int], list[int], list[int]]:
        """(member ids, days since 1970-01-01, logins, checkins, page views, seen in µs)."""
        seen_us = [ms * 1000 for ms in self.seen_ms]
        return self.member_ids, self.days, self.logins, self.checkins, self.page_views, seen_us


def coalesce_columns(events: Iterable[StreamEvent]) -> ActivityRows:
    """Events of one (member, day) become one row of summed deltas and the newest sighting.

    Sorted by (member, day), so concurrent upserts lock rows in one order.
    """
    acc: dict[int, list[int]] = {}
    get, slot_of = acc.get, _SLOT
    for _, member, code, at, n in events:
        key = (member << _DAY_BITS) | (at // DAY_MS)
        slot = get(key)
        if slot is None:
            acc[key] = slot = [0, 0, 0, at]
        elif at > slot[3]:
            slot[3] = at
        slot[slot_of[code]] += n
    keys = sorted(acc)
    values = [acc[key] for key in keys]
    return ActivityRows(
        [key >> _DAY_BITS for key in keys],
        [key & _DAY_MASK for key in keys],
        [v[0] for v in values],
        [v[1] for v in values],
        [v[2] for v in values],
        [v[3] for v in values],
    )


def coalesce(events: Iterable[StreamEvent]) -> list[ActivityRow]:
    """:func:`coalesce_columns` as a list of rows."""
    return list(coalesce_columns(events))
