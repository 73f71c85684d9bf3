"""Every Redis key the platform writes is built here, under the configured prefix.

Layout (prefix ``membership:`` by default)::

    membership:member:{id}                 one member record
    membership:analytics:{name}[:{params}] analytics aggregates
    membership:statistics:{name}           demographics and other statistics
    membership:lookup:{name}               tiers, statuses, countries
    membership:http:{sha}                  cached HTTP responses (the API middleware)
    membership:gen:{tag}                   generation counter of a tag (O(1) invalidation)
    membership:lease:{key}                 single-flight lease of one cache key
    membership:sys:{wb}:stream             write-behind buffer (a stream; never a TTL)
    membership:sys:{wb}:dead               write-behind dead letters (never a TTL)
    membership:sys:{wb}:day:{id}:{date}    a member's activity counters of one day (TTL'd)
    membership:sys:{wb}:once:{sha}         an activity POST's Idempotency-Key (TTL: its window)
    membership:sys:{wb-<p>}:...            the same keys of write-behind partition p > 0
    membership:sys:*                       other platform state (metrics, periods, leases)

Lease keys carry the cache key in a hash tag so that, on Redis Cluster, a key and its lease
share a slot and one Lua script can touch both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cache.errors import InvalidKey
from cache.types import DataType

# Parts may hold letters, digits and a few separators; nothing a glob or a hash tag reads.
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.@+=,\-/]{1,200}$")
_LEASE = "lease:"


def _part(value: object) -> str:
    text = str(value)
    if not _SAFE_PART.match(text):
        raise InvalidKey(f"invalid key part {text!r}")
    return text


def _wb_tag(partition: int) -> str:
    """The hash tag of a write-behind partition: "wb", then "wb-1", "wb-2", ..."""
    if type(partition) is not int or partition < 0:
        raise InvalidKey(f"invalid write-behind partition {partition!r}")
    return f"wb-{partition}" if partition else "wb"


class Keys:
    """Key builder bound to one prefix; the only place keys are formatted."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def entry(self, data_type: DataType | str, *parts: object) -> str:
        """membership:<data_type>:<part>:<part>..."""
        return ":".join((self.prefix + _part(DataType(data_type).value), *map(_part, parts)))

    def member(self, member_id: int | str) -> str:
        return f"{self.prefix}member:{_part(member_id)}"

    def members(self, member_ids: Iterable[int | str]) -> list[str]:
        prefix = f"{self.prefix}member:"
        return [prefix + _part(member_id) for member_id in member_ids]

    def member_id_of(self, key: str | bytes) -> int | None:
        """The member id of a key :meth:`member` built, else None (the inverse, for jobs that
        find keys by SCAN)."""
        text = key.decode() if isinstance(key, bytes) else key
        head = f"{self.prefix}member:"
        tail = text[len(head) :] if text.startswith(head) else ""
        return int(tail) if tail.isdigit() else None

    def analytics(self, name: str, *params: object) -> str:
        return self.entry(DataType.ANALYTICS, name, *params)

    def statistics(self, name: str, *params: object) -> str:
        return self.entry(DataType.STATISTICS, name, *params)

    def lookup(self, name: str) -> str:
        return self.entry(DataType.LOOKUP, name)

    def http(self, digest: str) -> str:
        return f"{self.prefix}http:{_part(digest)}"

    def tracked(self, data_types: Iterable[DataType]) -> list[str]:
        """The prefixes the near tier's tracking subscribes to (BCAST): the entries of its
        data types, the HTTP responses and the tag generations their keys fold in; never
        leases, streams or platform state."""
        return [self.prefix + DataType(dt).value + ":" for dt in data_types] + [
            self.prefix + "http:",
            self.prefix + "gen:",
        ]

    def generation(self, tag: str) -> str:
        return f"{self.prefix}gen:{_part(tag)}"

    def lease(self, key: str) -> str:
        # "{key}" makes the lease hash to the key's own slot on Cluster, unless the key
        # carries its own hash tag, which keys built here never do.
        return f"{self.prefix}{_LEASE}{{{key}}}"

    def writebehind(self, *parts: object, partition: int = 0) -> str:
        # One hash tag a partition: its stream, dead letters and the counters its record
        # step touches share a Cluster slot (the single Lua step is allowed there), and the
        # partitions hash to different slots, so on a Cluster they spread over the shards.
        # Partition 0 keeps the bare "wb" tag: one partition keeps the keys it always had.
        return f"{self.prefix}sys:{{{_wb_tag(partition)}}}:" + ":".join(map(_part, parts))

    def writebehind_pattern(self, *parts: str, partition: int = 0) -> str:
        """SCAN pattern under a partition's write-behind tag, e.g. ("day", "*")."""
        return f"{self.prefix}sys:{{{_wb_tag(partition)}}}:" + ":".join(parts)

    def system(self, *parts: object) -> str:
        return ":".join((self.prefix + "sys", *map(_part, parts)))

    def pattern(self, glob: str) -> str:
        """A SCAN pattern confined to the prefix; rejects patterns that could escape it."""
        if not glob or any(ch in glob for ch in "[]{}\\ \t\r\n") or len(glob) > 200:
            raise InvalidKey(f"invalid key pattern {glob!r}")
        return self.prefix + glob

    def owns(self, key: str) -> bool:
        return key.startswith(self.prefix)
