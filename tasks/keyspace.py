"""Key distribution by pattern: how many keys of each kind, and how much memory they hold.

Never KEYS (it blocks the server for the whole keyspace). SCAN walks the hash table in bucket
order, which is unrelated to key names, so its first ``sample`` keys are a fair sample of the
database: a pattern's share of the sample times DBSIZE estimates its key count. MEMORY USAGE
(pipelined, at most ``memory_sample`` keys per pattern) estimates the bytes. When the scan
reaches the end before ``sample`` keys, the counts are exact (``complete``).

Patterns are the kinds of key of cache/keys.py under the configured prefix (``member``,
``http``, ``gen``, ``sys`` ...); keys outside the prefix (the broker's, another
application's) are counted as ``other``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Final

from redis.exceptions import RedisError

from cache import CacheService
from cache.errors import CacheUnavailable

SAMPLE: Final = 5_000  # keys looked at per snapshot: a few ms of SCAN on any keyspace
MEMORY_SAMPLE: Final = 50  # MEMORY USAGE calls per pattern
SCAN_COUNT: Final = 1_000
OTHER: Final = "other"


def pattern_of(prefix: str, key: str) -> str:
    """The kind of a key: the first part after the prefix, or "other"."""
    if not key.startswith(prefix):
        return OTHER
    head, sep, _ = key[len(prefix) :].partition(":")
    return head if sep and head else OTHER


def _scan(client: Any, limit: int) -> tuple[list[str], bool]:
    """Up to ``limit`` keys in SCAN order; whether the scan covered the whole database."""
    keys: list[str] = []
    iterator: Iterator[Any] = client.scan_iter(count=SCAN_COUNT)
    for raw in itertools.islice(iterator, limit + 1):
        keys.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    complete = len(keys) <= limit
    return keys[:limit], complete


def distribution(
    cache: CacheService, *, sample: int = SAMPLE, memory_sample: int = MEMORY_SAMPLE
) -> dict[str, Any]:
    """``{"dbsize", "sampled", "complete", "patterns": {name: {glob, keys, bytes, ...}}}``."""
    client = cache.clients.writer
    prefix = cache.keys.prefix
    try:
        dbsize = int(client.dbsize())
        keys, complete = _scan(client, sample)
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(pattern_of(prefix, key), []).append(key)
        # Only our own keys are measured: another application's may be closed to our ACL
        # user, and their size is not ours to report.
        measured = {
            name: members[:memory_sample] if name != OTHER else []
            for name, members in groups.items()
        }
        pipe = client.pipeline(transaction=False)
        for members in measured.values():
            for key in members:
                pipe.memory_usage(key)
        replies = iter(pipe.execute(raise_on_error=False) if any(measured.values()) else [])
    except RedisError as exc:
        raise CacheUnavailable(f"key distribution: {exc}") from exc
    # Replies come in the order the commands were queued: pattern by pattern, as measured.
    # A key that expired between SCAN and MEMORY USAGE (None), or was refused, is skipped.
    sizes = {
        name: [int(r) for r in (next(replies) for _ in keys_) if isinstance(r, int)]
        for name, keys_ in measured.items()
    }
    total = len(keys)
    patterns: dict[str, Any] = {}
    for name, members in sorted(groups.items()):
        measured_sizes = sizes[name]
        average = sum(measured_sizes) / len(measured_sizes) if measured_sizes else 0.0
        estimated = len(members) if complete else round(len(members) / total * dbsize)
        row: dict[str, Any] = {"glob": None, "sampled": len(members), "keys": estimated}
        if name != OTHER:  # sizes only for what was measured
            row |= {
                "glob": f"{prefix}{name}:*",
                "avg_bytes": round(average, 1),
                "bytes": round(average * estimated),
            }
        patterns[name] = row
    return {"dbsize": dbsize, "sampled": total, "complete": complete, "patterns": patterns}
