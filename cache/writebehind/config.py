"""Settings of the buffer and its flushers; each default documented where it is defined."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    # Streams, each flushed in order by one flusher at a time, a member always to the same
    # one (member id % partitions). 1: one stream, one flusher busy. More spread the flush
    # over workers and database connections; grow it freely, shrink it only once drained.
    partitions: int = 1
    # Replicas that must hold an event before it is acknowledged (WAIT after each record
    # call, shared by a whole group). 0: acknowledged once the master has it; a failover
    # then loses what the replica had not received yet. Production runs 1.
    replicas: int = 0
    replica_timeout_ms: int = 100  # replicas ack in well under 1 ms on a LAN

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 64:
            raise ValueError("partitions must be 1..64")
        if self.replicas < 0 or self.replica_timeout_ms <= 0:
            raise ValueError("replicas must be >= 0 and replica_timeout_ms > 0")

    @classmethod
    def from_settings(cls, settings: Any) -> WriteBehindConfig:
        """The ``writebehind_<field>`` settings that exist; defaults for the others."""
        fields = cls.__dataclass_fields__
        return cls(**{n: getattr(settings, f"writebehind_{n}") for n in fields
                      if hasattr(settings, f"writebehind_{n}")})  # fmt: skip
