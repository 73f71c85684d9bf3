"""The operations a flow of the core asks its front to perform, and what a fetch reports.

A flow (cache/flow.py, cache/loading.py) is a generator: it yields one of these, the front
performs it (the sync front calls redis-py, the async front awaits redis.asyncio) and sends
the answer back. A Redis failure, or a command the breaker skipped, comes back as
``UNAVAILABLE``; only :class:`Load` can raise (the loader's own error), which the front throws
into the flow. The operations carry every key and byte: a front decides nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from cache.types import Sentinel

if TYPE_CHECKING:
    from cache.near import NearNode

# Sent back by a front when Redis could not run an operation (error, timeout, breaker open).
UNAVAILABLE: Final = Sentinel("UNAVAILABLE")


# --- Redis commands ----------------------------------------------------------------------------
@dataclass(slots=True)
class Read:
    """GET from the reader: bytes or None."""

    key: str


@dataclass(slots=True)
class ReadMany:
    """MGET of the master (one per node on Cluster): a list of bytes or None, in order. The
    master, because what it reads (generations) must not come from a lagging replica."""

    keys: list[str]


@dataclass(slots=True)
class Write:
    """SET with PX: True."""

    key: str
    payload: bytes
    px: int


@dataclass(slots=True)
class WriteGuarded:
    """scripts.WRITE_GUARDED: 1 stored, 0 when a newer version is cached (or, when
    ``present_only``, when no value is there)."""

    key: str
    lease_key: str
    payload: bytes
    px: int
    version: int
    present_only: bool = False

    def args(self) -> list[Any]:
        """The script's ARGV."""
        return [self.payload, self.px, self.version, int(self.present_only)]


@dataclass(slots=True)
class WriteMany:
    """One pipeline of SETs, or of WRITE_GUARDED calls when ``guarded``: the replies."""

    items: list[WriteGuarded]
    guarded: bool


@dataclass(slots=True)
class Retire:
    """One pipeline of scripts.RETIRE calls (each item's payload a retired envelope): the
    replies, 1 retired, 0 when a value at least as new was kept."""

    items: list[WriteGuarded]


@dataclass(slots=True)
class Unlink:
    """UNLINK (DEL per slot on Cluster): the number removed."""

    keys: list[str]


@dataclass(slots=True)
class TakeLease:
    """SET NX PX: True when taken."""

    lease_key: str
    token: str
    ms: int


@dataclass(slots=True)
class ReleaseLease:
    """scripts.RELEASE: the lease is deleted only if it still holds ``token``."""

    lease_key: str
    token: str


@dataclass(slots=True)
class Fill:
    """scripts.FILL: 1 when stored (our lease, no newer version), else 0."""

    key: str
    lease_key: str
    token: str
    payload: bytes
    px: int
    version: int


@dataclass(slots=True)
class Pipeline:
    """Plain commands (``("SET", key, value, "NX")``, ``("INCR", key)``...) in one pipelined
    round trip on the master: the replies, in order. A multi-key UNLINK is split per key on
    Cluster, where one cannot cross slots."""

    commands: list[tuple[Any, ...]]


@dataclass(slots=True)
class Ping:
    """PING of the master: True."""


@dataclass(slots=True)
class Info:
    """INFO of the master: a dict."""

    section: str | None = None


# --- Not Redis -------------------------------------------------------------------------------
@dataclass(slots=True)
class Load:
    """Call the loader (await it if it returns an awaitable): its value. May raise."""

    loader: Callable[[], Any]


@dataclass(slots=True)
class Sleep:
    seconds: float


Op = (
    Read
    | ReadMany
    | Write
    | WriteGuarded
    | WriteMany
    | Retire
    | Unlink
    | TakeLease
    | ReleaseLease
    | Fill
    | Pipeline
    | Ping
    | Info
    | Load
    | Sleep
)
Flow = Generator[Op, Any, Any]


# --- What a fetch reports ----------------------------------------------------------------------
class Outcome(enum.Enum):
    HIT = "HIT"  # a fresh entry (or one another caller filled while we waited)
    STALE = "STALE"  # a soft-expired entry, served while another caller refreshes it
    MISS = "MISS"  # the loader ran for this caller


@dataclass(slots=True)
class Fetched:
    """A value and how it was served.

    ``fresh_for``: seconds the value stays fresh (0 when stale), for Cache-Control max-age;
    None when it is not in the cache (Redis unavailable, cache disabled, fill refused), so a
    client must not keep it either. ``tier``: which tier served a HIT or STALE ("near":
    process memory, "redis"). ``node``: the near tier's entry that served it or now holds
    it, where the HTTP layer keeps the rendered body (cache.near.NearCache.attach).
    """

    value: Any
    outcome: Outcome
    fresh_for: float | None
    tier: Literal["near", "redis"] = "redis"
    node: NearNode | None = None
