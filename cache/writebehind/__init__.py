"""Write-behind of member activity: counters in Redis now, rows in the database exactly once.

``WriteBehind.record(events)`` is one Lua script per accepted write: it bumps the cached
counters (a hash per member per day: cache data with a TTL) and XADDs each event to a stream
with no TTL, which a ``volatile-*`` eviction policy never takes. Past ``max_backlog`` unflushed
entries, or when Redis is out of memory, it raises :class:`Backpressure` (the API's 503).
:class:`GroupRecorder` lets concurrent callers share one script call.
``AsyncGroupRecorder.record_once`` records a request once per idempotency key: the key's
check, the record and the key's write are one script, so a retry counts nothing twice. Each
record call carries a token of its own too (scripts.RECORD): the client library's one resend
of a call whose reply was lost finds it and answers the ids of the first run.

A :class:`Flusher` drains a stream through one consumer group: it coalesces a batch per
(member, day) and hands it to ``apply``, which upserts it and records the batch's last stream
id in the same transaction; only then are the entries acknowledged and trimmed, so the stream
length is the backlog. Exactly-once rests on one rule: batches are applied in stream order.
The fetch script enforces it atomically. It serves the group's pending entries first, as an
ordered prefix (the caller's own, then those of consumers idle for ``claim_idle_ms``), and
hands out new entries only while no other consumer holds any: the pending list is the flush
lock. XAUTOCLAIM is not used: it claims idle entries past a live holder's fresh one.

With ``partitions`` > 1 there is one stream a partition (member id % partitions), each with
its own group and its own database offset: the rule holds per stream, and flushers of
different partitions run side by side, in as many worker processes as there are partitions
(the flush task sends one run a partition; whichever process takes a run claims that
partition, the others find it busy). Counters add up and ``last_seen_at`` keeps the newest,
so no order is needed between partitions.

On a Redis Cluster: every key a partition's atomic step touches (its stream, its dead-letter
stream, and the counters of the members that hash to it) carries the partition's own hash tag
(``{wb}``, ``{wb-1}``, ...: cache/keys.py), so each step stays in one slot and the partitions
spread over the shards. The record step used to update counters and sum the backlog of every
partition in one script; now a member's counters live under its partition's tag, the backlog
limit is per partition (``max_backlog`` / partitions, checked on the partition's own stream),
and a write spanning partitions is one script call a partition (one pipeline on a single
server): atomic per partition, so past a partition's limit the events of the other
partitions may have been recorded (Backpressure says so; the API's writes are one member's).

``apply`` raises :class:`BatchOverlap` when the database holds part of the batch (a stalled
holder committed another cut of the same entries): the rest is applied. It raises
:class:`Unwritable` for rows that can never be written: their events go to the dead-letter
stream (listed, replayed, discarded) and the rest is applied.

    CacheError
    ├── Backpressure     backlog at its limit or Redis out of memory: nothing recorded
    ├── CacheUnavailable
    │   └── NotReplicated  fewer replicas than ``replicas`` confirmed (WAIT), or NOREPLICAS
    ├── InvalidEvent     malformed, too old or in the future (also a ValueError)
    ├── KeyReused        an idempotency key sent again with another request (a ValueError)
    ├── Unwritable       raised by apply: rows that can never be written
    └── BatchOverlap     raised by apply: the database holds the batch up to an id

Modules: events (data, entry format, coalescing: pure), config, errors, scripts (Lua),
buffer (WriteBehind), replicas (ReplicaGate), recorder (GroupRecorder), flusher (Flusher).
"""

from __future__ import annotations

from cache.writebehind.buffer import WriteBehind
from cache.writebehind.config import WriteBehindConfig
from cache.writebehind.errors import (
    Backpressure,
    BatchOverlap,
    InvalidEvent,
    KeyReused,
    NotReplicated,
    Unwritable,
)
from cache.writebehind.events import (
    DAY_MS,
    GROUP,
    KINDS,
    ActivityEvent,
    ActivityRow,
    ActivityRows,
    Apply,
    Batch,
    Health,
    StreamEvent,
    coalesce,
    coalesce_columns,
    parse_entries,
    stream_id,
)
from cache.writebehind.flusher import Flusher, FlushStats
from cache.writebehind.recorder import AsyncGroupRecorder, GroupRecorder, Once

__all__ = [
    "DAY_MS",
    "GROUP",
    "KINDS",
    "ActivityEvent",
    "ActivityRow",
    "ActivityRows",
    "Apply",
    "AsyncGroupRecorder",
    "Backpressure",
    "Batch",
    "BatchOverlap",
    "FlushStats",
    "Flusher",
    "GroupRecorder",
    "Health",
    "InvalidEvent",
    "KeyReused",
    "NotReplicated",
    "Once",
    "StreamEvent",
    "Unwritable",
    "WriteBehind",
    "WriteBehindConfig",
    "coalesce",
    "coalesce_columns",
    "parse_entries",
    "stream_id",
]
