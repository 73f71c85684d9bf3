"""Fill missing cache keys in bulk: ``SET key envelope PX ttl NX``, one pipeline per batch.

Warm-ups fill what is missing and never replace an entry: whatever is cached is at least as
new as the row it was read from (fills and write-throughs are version-guarded), while the row
a warm-up read may already be older than a write that happened meanwhile. NX makes a warm-up
racing a write-through harmless without a per-key Lua check, which costs the server several
times a plain SET and would cap a warm-up well under 100,000 keys/s. A write whose
invalidation *deletes* the key (bulk updates, imports, the outbox's replay) can still land
between the warm-up's read and its SET: the caller re-reads the versions of what was stored
(tasks/warming.py) and retracts what a write overtook.

Envelopes and TTLs (with their jitter) come from the cache core, as for every write. On a
standalone or Sentinel master the commands are packed as RESP here and sent in one write on a
pooled connection: redis-py's per-command argument handling costs more than the server's SET.
On Cluster the batch goes through redis-py's cluster pipeline (keys span slots).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import hiredis
import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache import CacheService, DataType
from cache.errors import CacheUnavailable
from cache.flow import UNAVAILABLE

_SET_NX: Final = (
    b"*6\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nPX\r\n$%d\r\n%b\r\n$2\r\nNX\r\n"
)

# Replies to a batch may take longer than the cache's request-path socket timeout (0.25 s by
# default, right for one GET): the server parses and runs thousands of SETs first.
REPLY_TIMEOUT: Final = 5.0
REPLY_BUFFER: Final = 64 * 1024  # a batch's replies ("+OK" or nil) are 5 bytes each

# (key, value, version): value is anything JSON-serializable, or orjson.Fragment for JSON
# bytes already rendered (by PostgreSQL, for members).
Item = tuple[str, Any, int]


def fragment(json_bytes: bytes) -> orjson.Fragment:
    """JSON bytes stored as they are, without a parse and re-serialization."""
    return orjson.Fragment(json_bytes)


def _packed(cache: CacheService, items: list[Item], data_type: DataType) -> bytes:
    keys, values, versions = zip(*items, strict=True)
    envelopes = cache.core.envelopes(values, data_type, versions)
    parts = []
    for key, (payload, px) in zip(keys, envelopes, strict=True):
        key_bytes, px_bytes = key.encode(), b"%d" % px
        parts.append(
            _SET_NX % (len(key_bytes), key_bytes, len(payload), payload, len(px_bytes), px_bytes)
        )
    return b"".join(parts)


def _replies(conn: Any, count: int) -> list[Any]:
    """The next ``count`` replies on ``conn``, parsed by one hiredis reader straight from the
    socket: redis-py's read_response per reply costs more than the server's SET. An error
    reply raises ResponseError (after all were read)."""
    reader = hiredis.Reader()  # error replies come back as hiredis.ReplyError values
    sock = conn._sock
    replies: list[Any] = []
    sock.settimeout(REPLY_TIMEOUT)
    try:
        while len(replies) < count:
            data = sock.recv(REPLY_BUFFER)
            if not data:
                raise RedisConnectionError("Redis closed the connection mid-batch")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
    except TimeoutError as exc:
        raise RedisTimeoutError(f"{count} replies not read in {REPLY_TIMEOUT} s") from exc
    except OSError as exc:
        raise RedisConnectionError(f"reading {count} replies: {exc}") from exc
    finally:
        sock.settimeout(conn.socket_timeout)
    if replies.count(b"OK") + replies.count(None) < count:
        error = next(reply for reply in replies if isinstance(reply, hiredis.ReplyError))
        raise ResponseError(str(error))
    return replies


def _send_resp(client: Any, packed: bytes, count: int) -> list[bool]:
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([packed])
        replies = _replies(conn, count)
    except BaseException:
        # Replies may be pending (a timeout, an interrupt): the connection is dropped rather
        # than handed to the next user out of step.
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    return [reply == b"OK" for reply in replies]


def _send_pipeline(cache: CacheService, items: list[Item], data_type: DataType) -> list[bool]:
    pipe = cache.clients.writer.pipeline(transaction=False)
    for key, value, version in items:
        payload, px = cache.core.envelope(value, data_type, version=version)
        pipe.set(key, payload, px=px, nx=True)
    return [bool(reply) for reply in pipe.execute()]


def fill_missing(cache: CacheService, items: Iterable[Item], data_type: DataType) -> list[Item]:
    """Store each item whose key holds nothing; the items stored. One round trip.

    Raises CacheUnavailable when Redis did not answer (the caller's task retries; a re-run
    only fills what is still missing).
    """
    batch = list(items)
    counters = cache.metrics.of(data_type)
    if not batch:
        return []
    if not cache.enabled:
        counters.skipped_writes += len(batch)
        return []
    # Through the service's breaker: a Redis that is failing is not hammered by warm-ups.
    if cache.clients.mode == "cluster":
        stored = cache.run(_send_pipeline, cache, batch, data_type)
    else:
        packed = _packed(cache, batch, data_type)
        stored = cache.run(_send_resp, cache.clients.writer, packed, len(batch))
    if stored is UNAVAILABLE:
        counters.skipped_writes += len(batch)
        raise CacheUnavailable(f"could not store {len(batch)} {data_type.value} keys")
    kept = [item for item, ok in zip(batch, stored, strict=True) if ok]
    counters.writes += len(kept)
    return kept
