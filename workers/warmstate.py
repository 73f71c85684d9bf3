"""The automatic warm-up's state in Redis: who is warming now, the last run, the Redis seen.

Written by the worker tasks (tasks/autowarm.py, tasks/chunks.py), read by them and by the API's
``GET /api/v1/cache/warmup/current`` (which the dashboard polls): one definition of the keys
and of their JSON for both, importable by producers (no task code, no Celery).

    <prefix>sys:warmup:lease     the running warm-up's lease (SET NX PX, renewed, released);
                                 its value says which task holds it, why, since when
    <prefix>sys:warmup:last      the last finished automatic (or chunked) warm-up, its result
    <prefix>sys:warmup:run:<id>  a chunked warm-up's progress summed across its chunk tasks
    <prefix>sys:redis:identity   the cache server's run id and master address, as last seen
                                 by the redis-watch beat job

All three live under ``sys:``, which the management ``clear`` never deletes: a clear removes
entries, not the record that a warm-up is running.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from redis.exceptions import RedisError

from cache.client import SyncRedis
from cache.errors import CacheUnavailable
from cache.keys import Keys


def lease_key(keys: Keys) -> str:
    return keys.system("warmup", "lease")


def last_key(keys: Keys) -> str:
    return keys.system("warmup", "last")


def run_key(keys: Keys, run_id: str) -> str:
    """The progress of a warm-up split into chunk tasks (tasks/chunks.py), summed across
    the worker processes; removed when the run finishes, expires if it never does."""
    return keys.system("warmup", "run", run_id)


def identity_key(keys: Keys) -> str:
    return keys.system("redis", "identity")


def decoded(raw: bytes | str | None) -> dict[str, Any] | None:
    """A state document, or None for a missing (or foreign) value."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def encoded(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def holder(task_id: str, reason: str, hostname: str | None) -> dict[str, Any]:
    """The lease's value for a warm-up starting now: which task, why, on which worker."""
    return {
        "task_id": task_id,
        "reason": reason,
        "worker": str(hostname or socket.gethostname()),
        "started_at": time.time(),
    }


def held_by(redis: SyncRedis, keys: Keys) -> dict[str, Any]:
    """Who holds the lease, once our SET NX was refused; CacheUnavailable when Redis cannot
    say (unreadable, or held by nobody: Redis refused the SET itself)."""
    try:
        other = decoded(redis.get(lease_key(keys)))
    except RedisError as exc:
        raise CacheUnavailable(f"warm-up lease unreadable: {exc}") from exc
    if other is None:
        raise CacheUnavailable("warm-up lease could not be taken")
    return other
