"""``cachectl restore FILE --into URL``: a backup copy back into a live, empty Redis node.

The mechanism: the copy is loaded into a private redis-server on 127.0.0.1
(tasks/jobs/loaded_copy.py), every key is read from it with DUMP and PTTL and written to the
node with RESTORE and the same TTL, in pipelined batches of ``BATCH`` keys (two round trips
per batch on each side), database by database into the same numbers. Why this one:

- It goes through the same client as the application (redis-py: TLS, ACL user, password), so
  it reaches a node anywhere the platform can; MIGRATE would need the private server to open
  its own connection to the node, which does not carry our TLS settings, and REPLICAOF would
  need the node to reach back to this machine's loopback and would make a Sentinel-managed
  master a replica for a while, which Sentinel treats as a failover.
- A DUMP payload is the value in RDB form with everything a key has: a stream's entries, its
  consumer groups, their last-delivered ids and pending lists, so the write-behind flusher
  resumes where the backup left it and the database's recorded stream position makes a
  re-delivered batch a no-op (exactly once).
- The node keeps serving while it is filled (no restart with a dump file put in its data
  directory, which with AOF on would be ignored anyway: Redis loads the AOF when it exists).
- A key that expired in the copy is skipped, and every other keeps its remaining TTL.

Before anything is written: the copy is checked against its manifest (size and sha256: a
truncated or corrupt copy is refused), and the node must be empty (every database), since
mixing a backup with newer data is a decision for the operator: ``--force`` writes the
backup's keys over it (RESTORE ... REPLACE) and leaves other keys alone. After: the node's
inventory (tasks/jobs/inventory.py) is compared with the manifest's, so a missing stream
entry, consumer group, queued task or key without TTL fails the command (exit 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

from cache.keys import Keys
from tasks.jobs.inventory import (
    Inventory,
    databases,
    differences,
    expired,
    take_inventory,
)
from tasks.jobs.loaded_copy import LoadedCopy, load_copy

BATCH: Final = 500  # keys per pipelined DUMP/RESTORE step: large values stay bounded in memory
SOCKET_TIMEOUT_S: Final = 30.0  # RESTORE of a large stream or hash on a busy node


class RestoreRefused(Exception):
    """Nothing was written: the node or the copy is not fit for a restore."""


class RestoreFailed(Exception):
    """The restore stopped part way: the node holds part of the copy."""


def masked(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=user + host))


def without_db(url: str) -> str:
    """The URL without a database number (path or ``db=``): redis-py lets the URL's win over
    the ``db`` argument, and each database of the copy goes to its own number."""
    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
    return urlunsplit(parts._replace(path="", query=query))


@dataclass
class Target:
    """The live node, one client per database."""

    url: str
    clients: dict[int, redis.Redis] = field(default_factory=dict)

    def __call__(self, db: int) -> redis.Redis:
        if db not in self.clients:
            self.clients[db] = redis.Redis.from_url(
                without_db(self.url),
                db=db,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=10,
            )
        return self.clients[db]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


def check_target(target: Target, force: bool) -> dict[int, int]:
    """The keys per database already on the node; RestoreRefused when it cannot take one."""
    client = target(0)
    try:
        server = client.info("server")
        role = client.info("replication").get("role")
        keyspace = {int(name[2:]): int(v["keys"]) for name, v in client.info("keyspace").items()}
    except RedisError as exc:
        raise RestoreRefused(f"{masked(target.url)} cannot be used: {exc}") from exc
    if server.get("redis_mode") == "cluster":
        raise RestoreRefused(f"{masked(target.url)} is a Cluster node: restore node by node")
    if role != "master":
        raise RestoreRefused(
            f"{masked(target.url)} is a {role}: restore into the master, the replicas follow"
        )
    if keyspace and not force:
        held = ", ".join(f"db {db}: {keys:,} keys" for db, keys in sorted(keyspace.items()))
        raise RestoreRefused(
            f"{masked(target.url)} is not empty ({held}): restore into an empty node, or pass "
            "--force to write the backup's keys over these (keys not in the backup stay)"
        )
    return keyspace


def copy_database(source: redis.Redis, target: redis.Redis, replace: bool) -> tuple[int, int]:
    """Every key of ``source`` into ``target`` with its TTL; (restored, expired meanwhile)."""
    restored = gone = 0
    cursor = 0
    while True:
        cursor, batch = source.scan(cursor, count=BATCH)
        if batch:
            read = source.pipeline(transaction=False)
            for key in batch:
                read.dump(key)
                read.pttl(key)
            replies = read.execute()
            write = target.pipeline(transaction=False)
            written = 0
            for key, payload, pttl in zip(batch, replies[::2], replies[1::2], strict=True):
                if payload is None or pttl == -2:
                    gone += 1  # expired in the copy since the SCAN
                    continue
                # RESTORE's ttl 0 means none; a key about to expire keeps at least 1 ms.
                write.restore(key, 0 if pttl == -1 else max(int(pttl), 1), payload, replace)
                written += 1
            failed = [r for r in write.execute(raise_on_error=False) if isinstance(r, Exception)]
            if failed:
                raise RestoreFailed(
                    f"restore failed: {len(failed)} of {written} keys refused: {failed[0]}"
                )
            restored += written
        if cursor == 0:
            return restored, gone


def restore_into(
    copy: Path, url: str, *, force: bool, manifest: dict[str, Any] | None, prefix: str
) -> dict[str, Any]:
    """Restore ``copy`` into the node at ``url`` and verify it; the outcome as plain data.

    ``manifest``: the copy's (already checked against the file), whose inventory the node is
    compared with; None compares with the copy's inventory taken here before the copy."""
    started = time.monotonic()
    keys = Keys(manifest["key_prefix"] if manifest else prefix)
    target = Target(url)
    server: LoadedCopy | None = None
    try:
        before = check_target(target, force)
        server, _ = load_copy(copy)
        expected: Inventory = (
            manifest["inventory"] if manifest else take_inventory(server.client, keys)
        )
        moved: dict[str, dict[str, int]] = {}
        for db in databases(server.client(0)):
            done, gone = copy_database(server.client(db), target(db), replace=force)
            moved[str(db)] = {"restored": done, "expired": gone}
        actual = take_inventory(target, keys)
    except RedisError as exc:
        raise RestoreFailed(f"restore into {masked(url)} failed: {exc}") from exc
    finally:
        target.close()
        if server is not None:
            server.stop()
    found = differences(expected, actual, extra_allowed=force)
    return {
        "file": str(copy.resolve()),
        "into": masked(url),
        "forced_over": {str(db): n for db, n in before.items()},
        "databases": moved,
        "restored": sum(m["restored"] for m in moved.values()),
        "expired_since_backup": expired(expected, actual),
        "streams": {db: inv["streams"] for db, inv in actual.items() if inv["streams"]},
        "queues": {db: inv["queues"] for db, inv in actual.items() if inv["queues"]},
        "differences": found,
        "ok": not found,
        "seconds": round(time.monotonic() - started, 3),
    }
