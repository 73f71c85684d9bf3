"""The near tier's invalidations: one dedicated Redis connection per process, BCAST mode.

How it is tracked, and why:

- **REDIRECT to itself, BCAST with prefixes.** The connection runs ``CLIENT TRACKING ON
  REDIRECT <its own id> BCAST PREFIX <prefix><type>: ...`` and subscribes to
  ``__redis__:invalidate``; Redis then sends it the key of every write under those prefixes
  (a message on the channel in RESP2, an ``invalidate`` push in RESP3: the connection speaks
  what the pool's handshake chose, both are read). BCAST needs nothing from the connections
  that *read*: the project's direct readers (cache/direct.py, cache/aiodirect.py, pipelined)
  and both fronts stay as they are, with no per-connection ``CLIENT TRACKING`` to re-issue
  whenever the tracking connection's id changes, and no "redirect broken" state that RESP2
  readers would never hear about. Default mode would track only the keys this process read
  (less traffic), but every reading connection must enable tracking and redirect to the
  tracker, and the server's tracking table fills (``tracking-table-max-keys``), which then
  invalidates live keys early. The price of BCAST: every write of a near-cached data type
  reaches every process (one small message per key written); the prefixes are the near
  types' only, never leases, streams or generations. ``tracking-table-max-keys`` does not
  apply to BCAST (Redis keeps a prefix table, not a key table).
- **Down means flushed.** Any error, EOF, or a heartbeat PING left unanswered for the socket
  timeout ends the session: the tier stops serving at once and is flushed
  (:meth:`cache.near.NearCache.down`), and a new session flushes again once subscribed, so a
  push lost while down can never leave a stale entry. Every message read pushes
  ``live_until`` forward by one heartbeat plus the timeout; a silent connection stops near
  hits by then even if this thread is starved.
- **Drained by readers.** A reader thread that is busy would leave this thread waiting for
  the GIL for up to the switch interval (5 ms); the near tier calls :meth:`Tracker.drain`
  at most every 0.5 ms on its hit path, which reads what is pending without blocking.
- **Sentinel**: the connection comes from the master's pool, so a reconnect finds the new
  master (Sentinel also kills the old master's clients on failover: the session ends, the
  tier is flushed). **Cluster**: the tier is off (one tracker per master node and slot
  moves are not done yet). Reads from replicas: off too (a replica may answer with the old
  value after the master's push arrived).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

from cache.near import BIG_PUSH, NearCache

log = logging.getLogger("cache")

CHANNEL: Final = "__redis__:invalidate"
HEARTBEAT: Final = 0.5  # seconds of silence before a PING
RECONNECT_BACKOFF: Final = (0.05, 0.1, 0.25, 0.5, 1.0)


def _pack(*args: str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _call(sock: socket.socket, reader: Any, packed: bytes) -> Any:
    """A command during setup (blocking, with the socket's timeout): its reply."""
    sock.sendall(packed)
    while (reply := reader.gets()) is False:
        data = sock.recv(65536)
        if not data:
            raise RedisConnectionError("tracking connection closed during setup")
        reader.feed(data)
    if isinstance(reply, ResponseError):
        raise reply
    return reply


class Tracker:
    """The tracking connection of one process and its thread.

    ``connect``: a connected redis-py ``Connection`` (handshake done: AUTH, SELECT, name) to
    the server the tier's reads go to. ``prefixes``: the BCAST prefixes.
    """

    def __init__(
        self,
        near: NearCache,
        connect: Callable[[], Any],
        prefixes: Sequence[str],
        *,
        timeout: float = 0.25,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.near = near
        self._connect = connect
        self._prefixes = list(prefixes)
        self._timeout = timeout
        self._heartbeat = heartbeat
        self._lock = threading.Lock()  # one reader of the socket at a time
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._broken = False
        self._last_seen = 0.0
        self._ping_sent = 0.0  # 0: no PING outstanding
        self.client_id: int | None = None
        self.sessions = 0  # sessions established (tests watch reconnects)
        self.connected = threading.Event()

    # --- lifetime ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="cache-near-tracking", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.near.drain = None
        self.near.down()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close()

    def wait_connected(self, timeout: float = 5.0) -> bool:
        return self.connected.wait(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._session()
                failures = 0
            except Exception as exc:  # any failure ends the session; the tier is flushed
                if not self._stopping.is_set():
                    log.warning("near cache tracking lost: %s: %s", type(exc).__name__, exc)
                failures += 1
            finally:
                self.connected.clear()
                self.near.down()
                self._close()
            delay = RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)]
            self._stopping.wait(delay if failures else 0.0)

    # --- one session -------------------------------------------------------------------------
    def _session(self) -> None:
        conn = self._connect()
        sock: socket.socket = conn._sock
        # Bytes, not text: a bulk write's push names 100,000 keys, decoded only when small.
        reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._conn = conn  # closed by _close whatever happens next
        # Set up outside the lock: a reader's drain must never wait on these round trips.
        sock.settimeout(self._timeout)
        client_id = int(_call(sock, reader, _pack("CLIENT", "ID")))
        prefixes: list[str | int] = []
        for prefix in self._prefixes:
            prefixes += ["PREFIX", prefix]
        tracking = _pack("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes)
        _call(sock, reader, tracking)
        _call(sock, reader, _pack("SUBSCRIBE", CHANNEL))
        sock.setblocking(False)
        with self._lock:
            self._sock, self._reader, self._broken = sock, reader, False
            self.client_id = client_id
            # Subscribed: from here on every write is pushed. What was held is not trusted.
            self.near.flush()
            self._seen(time.monotonic())
            self.near.drain = self.drain
            self.sessions += 1
            self.connected.set()
        while not self._stopping.is_set():
            readable, _, _ = select.select([sock], [], [], self._heartbeat / 2)
            with self._lock:
                if self._broken:
                    raise RedisConnectionError("tracking connection broken")
                self._tick(time.monotonic(), bool(readable))

    def drain(self) -> None:
        """Read pending invalidations now, without blocking (the near tier's hit path)."""
        # The tracker thread holds the lock only while it reads and handles what arrived:
        # wait for it (the wait lets it have the GIL) rather than serve what it may drop.
        if self._sock is None or not self._lock.acquire(timeout=self._timeout):
            return
        try:
            if self._sock is not None and not self._broken:
                self._tick(time.monotonic(), True)
        except Exception:
            self._broken = True  # the tracker thread ends the session
            self.near.down()
        finally:
            self._lock.release()

    def _tick(self, now: float, readable: bool) -> None:
        """Inside the lock: read what is there, handle it; PING when quiet; fail when a PING
        went unanswered for the timeout."""
        sock = self._sock
        assert sock is not None
        if readable:
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    raise RedisConnectionError("tracking connection closed by the server")
                self._reader.feed(data)
                if len(data) < 65536:
                    break
            got = False
            while (message := self._reader.gets()) is not False:
                got = True
                self._handle(message)
            if got:
                self._seen(now)
        if self._ping_sent:
            if now - self._ping_sent > self._timeout:
                raise RedisConnectionError("tracking connection: heartbeat unanswered")
        elif now - self._last_seen >= self._heartbeat:
            sock.send(_pack("PING"))
            self._ping_sent = now

    def _handle(self, message: Any) -> None:
        if isinstance(message, ResponseError):
            raise message
        if isinstance(message, list) and message:
            kind = message[0]
            if kind == b"message" and len(message) == 3:  # RESP2: published on the channel
                self._invalidate(message[2])
            elif kind == b"invalidate" and len(message) == 2:  # RESP3: a push
                self._invalidate(message[1])
            elif kind == b"pong":  # RESP2, subscribed
                self._ping_sent = 0.0
        elif message == b"PONG":  # RESP3 (the pool may speak it: redis-py >= 8)
            self._ping_sent = 0.0

    def _invalidate(self, keys: list[bytes] | None) -> None:
        """A list of keys, or None: a flush. A bulk write's push (an import's UNLINK of every
        member) flushes the tier instead of looking up each key: cheaper, and still exact."""
        if keys is not None and len(keys) > BIG_PUSH:
            self.near.counters.invalidations += len(keys)
            keys = None
        self.near.invalidate(None if keys is None else [key.decode() for key in keys])

    def _seen(self, now: float) -> None:
        self._last_seen = now
        # Wall clock, as the near tier's hit path reads it.
        self.near.live_until = time.time() + self._heartbeat + self._timeout

    def _close(self) -> None:
        with self._lock:
            conn, self._conn, self._sock = self._conn, None, None
            self._ping_sent = 0.0
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone
                conn.disconnect()


def tracker_for(near: NearCache | None, prefixes: Sequence[str], pool: Any) -> Tracker | None:
    """The tracker of a process's near tier on the master's pool (standalone, or Sentinel's
    pool that finds the current master on each connect); None when the tier is off."""
    if near is None:
        return None

    def connect() -> Any:
        conn = pool.make_connection()
        conn.connect()
        return conn

    timeout = pool.connection_kwargs.get("socket_timeout") or 0.25
    return Tracker(near, connect, prefixes, timeout=timeout)
