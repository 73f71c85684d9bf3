"""What a Redis node holds, counted the same way at backup time and after a restore.

The inventory is recorded in each backup's manifest (tasks/jobs/manifest.py) from the copy
itself, loaded in a private server, and taken again from the node a copy was restored into;
:func:`differences` compares the two. Per database:

- ``families``: key counts per family and type, split into ``persistent`` (no TTL) and
  ``volatile`` keys. A family is the first part of a key under the prefix (``member``,
  ``analytics``, ``gen``...; platform state as ``sys:<part>``, the write-behind as
  ``sys:{wb}``), ``queue:<name>`` for a Celery queue of workers/routing.py and ``other`` for
  the rest (Celery's bindings, unacked messages and results).
- ``streams``: every stream's length, last id and consumer groups (pending entries,
  last-delivered id, consumers): the write-behind buffer and its dead letters.
- ``queues``: the length of every Celery queue held here: the messages waiting on a worker,
  the invalidations among them (the hooks' durable outbox, tasks/invalidation.py).

Persistent keys, streams and queues must come back exactly. A volatile key may have expired
between the backup and the restore, so fewer of them is expected and reported, never more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final

import redis

from cache.keys import Keys
from workers.routing import QUEUES

SCAN_COUNT: Final = 1000
# kombu's Redis transport keeps the messages of priority N of queue Q in the list Q + sep + N.
PRIORITY_SEP: Final = "\x06\x16"

Inventory = dict[str, Any]
ClientOf = Callable[[int], redis.Redis]  # a client of database n


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def queue_of(key: str) -> str | None:
    """The Celery queue whose messages the list ``key`` holds, if any."""
    name = key.split(PRIORITY_SEP, 1)[0]
    return name if name in QUEUES else None


def family_of(keys: Keys, key: str) -> str:
    if not keys.owns(key):
        queue = queue_of(key)
        return f"queue:{queue}" if queue else "other"
    head, _, rest = key[len(keys.prefix) :].partition(":")
    if head == "sys":
        return "sys:" + rest.partition(":")[0]
    return head


def databases(client: redis.Redis) -> list[int]:
    """The numbers of the databases that hold keys (INFO keyspace)."""
    return sorted(int(name[2:]) for name in client.info("keyspace") if name.startswith("db"))


def _batches(client: redis.Redis) -> Iterator[list[Any]]:
    cursor = 0
    while True:
        cursor, found = client.scan(cursor, count=SCAN_COUNT)
        if found:
            yield list(found)
        if cursor == 0:
            return


def _stream(client: redis.Redis, key: bytes) -> dict[str, Any]:
    info = client.xinfo_stream(key)
    groups = {
        _text(group["name"]): {
            "pending": int(group["pending"]),
            "last_delivered_id": _text(group["last-delivered-id"]),
            "consumers": int(group["consumers"]),
        }
        for group in client.xinfo_groups(key)
    }
    return {
        "length": int(info["length"]),
        "last_id": _text(info["last-generated-id"]),
        "groups": groups,
    }


def _database(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    families: Counter[tuple[str, str, bool]] = Counter()
    streams: dict[str, Any] = {}
    queues: dict[str, int] = {}
    for batch in _batches(client):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.type(key)
            pipe.pttl(key)
        replies = pipe.execute()
        for key, kind, pttl in zip(batch, replies[::2], replies[1::2], strict=True):
            if pttl == -2:
                continue  # expired or deleted since the SCAN
            name, kind = _text(key), _text(kind)
            families[family_of(keys, name), kind, pttl == -1] += 1
            if kind == "stream":
                streams[name] = _stream(client, key)
            elif kind == "list" and queue_of(name):
                queues[name] = int(client.llen(key))
    grouped: dict[str, dict[str, int]] = {}
    for (family, kind, persistent), count in sorted(families.items()):
        counts = grouped.setdefault(f"{family}/{kind}", {"persistent": 0, "volatile": 0})
        counts["persistent" if persistent else "volatile"] += count
    return {
        "keys": sum(families.values()),
        "families": grouped,
        "streams": streams,
        "queues": queues,
    }


def take_inventory(client_of: ClientOf, keys: Keys) -> Inventory:
    """The inventory of every database that holds keys; ``client_of(n)`` reaches database n
    (its clients are the caller's to close)."""
    return {str(n): _database(client_of(n), keys) for n in databases(client_of(0))}


def differences(
    expected: Inventory, actual: Inventory, *, extra_allowed: bool = False
) -> list[str]:
    """What ``actual`` misses of ``expected``, one sentence each; empty when it matches.

    ``extra_allowed``: keys beside the backup's were kept (a restore with --force), so more
    keys than recorded is not a difference; the streams and queues were replaced and must
    still match exactly.
    """
    found: list[str] = []
    empty: dict[str, Any] = {"keys": 0, "families": {}, "streams": {}, "queues": {}}
    for db in sorted(set(expected) | set(actual), key=int):
        want, have = expected.get(db, empty), actual.get(db, empty)
        for group in sorted(set(want["families"]) | set(have["families"])):
            w = want["families"].get(group, {"persistent": 0, "volatile": 0})
            h = have["families"].get(group, {"persistent": 0, "volatile": 0})
            if h["persistent"] < w["persistent"] or (
                h["persistent"] > w["persistent"] and not extra_allowed
            ):
                found.append(
                    f"db {db} {group}: {h['persistent']} keys without TTL, "
                    f"the backup has {w['persistent']}"
                )
            if h["volatile"] > w["volatile"] and not extra_allowed:
                found.append(
                    f"db {db} {group}: {h['volatile']} keys with a TTL, "
                    f"more than the backup's {w['volatile']}"
                )
        for kind in ("streams", "queues"):
            for name in sorted(set(want[kind]) | set(have[kind])):
                if want[kind].get(name) != have[kind].get(name):
                    found.append(
                        f"db {db} {kind[:-1]} {name}: {have[kind].get(name)}, "
                        f"the backup has {want[kind].get(name)}"
                    )
    return found


def expired(expected: Inventory, actual: Inventory) -> int:
    """Keys with a TTL in the backup that are not back (expired since), over every database."""
    missing = 0
    for db, want in expected.items():
        have = actual.get(db, {"families": {}})["families"]
        for group, counts in want["families"].items():
            back = have.get(group, {"volatile": 0})["volatile"]
            missing += max(0, counts["volatile"] - back)
    return missing
