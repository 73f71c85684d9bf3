"""Whether the master has the replicas an event must reach before it is acknowledged.

With ``replicas`` required, an event the master records but no replica confirms (WAIT) is
refused yet already recorded: it may still be flushed, and a client retrying it would count it
twice. The gate refuses up front, recording nothing, while the master is known to have fewer
online replicas than required (after a failover, until a replica is back). It reads INFO
replication at most every ``REFRESH_S`` on the recording path, so a refusal costs nothing and
an acceptance one INFO call per interval; WAIT still confirms every event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from cache.replication import replica_entries
from cache.writebehind.errors import NotReplicated

REFRESH_S: Final = 0.5  # a replica that comes back is noticed within this


def online_replicas(replication: Mapping[str, Any]) -> int:
    """Replicas in sync with the master, from a parsed INFO replication section."""
    return sum(1 for replica in replica_entries(replication) if replica.get("state") == "online")


class ReplicaGate:
    def __init__(self, required: int, refresh_s: float = REFRESH_S) -> None:
        self.required, self.refresh_s = required, refresh_s
        self.online = required  # assumed until the first look
        self._checked = float("-inf")

    def due(self) -> bool:
        """Time to read INFO replication again (never when no replica is required)."""
        return bool(self.required) and time.monotonic() - self._checked >= self.refresh_s

    def update(self, replication: Mapping[str, Any]) -> None:
        self.online, self._checked = online_replicas(replication), time.monotonic()

    def check(self) -> None:
        """NotReplicated, nothing recorded, while the master has too few online replicas."""
        if self.online < self.required:
            raise NotReplicated(
                f"not recorded: the master has {self.online} of {self.required} replicas online"
                " that must confirm an event; retry once a replica is back",
                recorded=False,
            )
