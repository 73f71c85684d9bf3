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
  tier is flushed). **Cluster**: one tracking connection per primary, each pushing the writes
  to its own slots; a change of primaries as the cluster client sees them (a failover, a new
  node) ends the session before the next near hit, flushes and tracks the new primaries.
  **TLS**: the sockets are TLS sockets; a record already decrypted is read before select()
  is asked again. Reads from replicas: the tier is off (a replica may answer with the old
  value after the master's push arrived).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

import hiredis
from redis.cluster import RedisCluster
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


class _Link:
    """One tracking connection of a session (one per master: a Cluster has several)."""

    __slots__ = ("client_id", "conn", "last_seen", "ping_sent", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = conn._sock  # a socket, or an ssl.SSLSocket over TLS
        # Bytes, not text: a bulk write's push names 100,000 keys, decoded only when small.
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self.client_id = 0
        self.last_seen = 0.0
        self.ping_sent = 0.0  # 0: no PING outstanding


class Tracker:
    """The tracking connections of one process and their thread.

    ``connect``: the connected redis-py ``Connection``s (handshake done: AUTH, SELECT, name),
    one per server the tier's reads go to (a Cluster's primaries; else the master).
    ``prefixes``: the BCAST prefixes. ``topology``: for a Cluster, the primaries as the
    process's cluster client knows them now; a change ends the session (flushed, reconnected
    to the new primaries) before a near hit is served.
    """

    def __init__(
        self,
        near: NearCache,
        connect: Callable[[], list[Any]],
        prefixes: Sequence[str],
        *,
        timeout: float = 0.25,
        heartbeat: float = HEARTBEAT,
        topology: Callable[[], Hashable] | None = None,
    ) -> None:
        self.near = near
        self._connect = connect
        self._prefixes = list(prefixes)
        self._timeout = timeout
        self._heartbeat = heartbeat
        self._topology = topology
        self._view: Hashable = None
        self._lock = threading.Lock()  # one reader of the sockets at a time
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: list[Any] = []
        self._links: list[_Link] = []
        self._broken = False
        self.client_ids: list[int] = []
        self.sessions = 0  # sessions established (tests watch reconnects)
        self.connected = threading.Event()

    @property
    def client_id(self) -> int | None:
        """The tracking connection's id (the first master's, on a Cluster)."""
        return self.client_ids[0] if self.client_ids else None

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
        view = self._topology() if self._topology is not None else None
        self._conns = self._connect()  # closed by _close whatever happens next
        links = [_Link(conn) for conn in self._conns]
        prefixes: list[str | int] = []
        for prefix in self._prefixes:
            prefixes += ["PREFIX", prefix]
        # Set up outside the lock: a reader's drain must never wait on these round trips.
        for link in links:
            sock, reader = link.sock, link.reader
            sock.settimeout(self._timeout)
            link.client_id = int(_call(sock, reader, _pack("CLIENT", "ID")))
            tracking = _pack(
                "CLIENT", "TRACKING", "ON", "REDIRECT", link.client_id, "BCAST", *prefixes
            )
            _call(sock, reader, tracking)
            _call(sock, reader, _pack("SUBSCRIBE", CHANNEL))
            sock.setblocking(False)
        with self._lock:
            self._links, self._view, self._broken = links, view, False
            self.client_ids = [link.client_id for link in links]
            # Subscribed: from here on every write is pushed. What was held is not trusted.
            self.near.flush()
            now = time.monotonic()
            for link in links:
                link.last_seen = now
            self._live(now)
            self.near.drain = self.drain
            self.sessions += 1
            self.connected.set()
        socks = [link.sock for link in links]
        while not self._stopping.is_set():
            readable, _, _ = select.select(socks, [], [], self._heartbeat / 2)
            with self._lock:
                if self._broken:
                    raise RedisConnectionError("tracking connection broken")
                self._tick(time.monotonic(), readable)

    def drain(self) -> None:
        """Read pending invalidations now, without blocking (the near tier's hit path)."""
        # The tracker thread holds the lock only while it reads and handles what arrived:
        # wait for it (the wait lets it have the GIL) rather than serve what it may drop.
        if not self._links or not self._lock.acquire(timeout=self._timeout):
            return
        try:
            if self._links and not self._broken:
                self._tick(time.monotonic(), None)
        except Exception:
            self._broken = True  # the tracker thread ends the session
            self.near.down()
        finally:
            self._lock.release()

    def _tick(self, now: float, readable: Sequence[Any] | None) -> None:
        """Inside the lock: read what is there (``readable``, or every socket when None),
        handle it; PING a quiet connection; fail when a PING went unanswered for the timeout
        or the Cluster's primaries changed."""
        if self._topology is not None and self._topology() != self._view:
            raise RedisConnectionError("the cluster's primaries changed")
        seen = False
        for link in self._links:
            if (readable is None or link.sock in readable) and self._read(link):
                link.last_seen = now
                seen = True
            if link.ping_sent:
                if now - link.ping_sent > self._timeout:
                    raise RedisConnectionError("tracking connection: heartbeat unanswered")
            elif now - link.last_seen >= self._heartbeat:
                link.sock.send(_pack("PING"))
                link.ping_sent = now
        if seen:
            self._live(now)

    def _read(self, link: _Link) -> bool:
        """Feed what the socket holds to the link's parser and handle each message; True
        when at least one was read."""
        sock = link.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            if not data:
                raise RedisConnectionError("tracking connection closed by the server")
            link.reader.feed(data)
            # Over TLS a record may sit decrypted in the SSL object, invisible to select().
            if len(data) < 65536 and not (getattr(sock, "pending", None) and sock.pending()):
                break
        got = False
        while (message := link.reader.gets()) is not False:
            got = True
            self._handle(link, message)
        return got

    def _handle(self, link: _Link, message: Any) -> None:
        if isinstance(message, ResponseError):
            raise message
        if isinstance(message, list) and message:
            kind = message[0]
            if kind == b"message" and len(message) == 3:  # RESP2: published on the channel
                self._invalidate(message[2])
            elif kind == b"invalidate" and len(message) == 2:  # RESP3: a push
                self._invalidate(message[1])
            elif kind == b"pong":  # RESP2, subscribed
                link.ping_sent = 0.0
        elif message == b"PONG":  # RESP3 (the pool may speak it: redis-py >= 8)
            link.ping_sent = 0.0

    def _invalidate(self, keys: list[bytes] | None) -> None:
        """A list of keys, or None: a flush. A bulk write's push (an import's UNLINK of every
        member) flushes the tier instead of looking up each key: cheaper, and still exact."""
        if keys is not None and len(keys) > BIG_PUSH:
            self.near.counters.invalidations += len(keys)
            keys = None
        self.near.invalidate(None if keys is None else [key.decode() for key in keys])

    def _live(self, now: float) -> None:
        """Serve near hits until the quietest connection's heartbeat would be overdue (wall
        clock, as the near tier's hit path reads it)."""
        oldest = min(link.last_seen for link in self._links)
        self.near.live_until = time.time() - (now - oldest) + self._heartbeat + self._timeout

    def _close(self) -> None:
        with self._lock:
            conns, self._conns, self._links = self._conns, [], []
        for conn in conns:
            with contextlib.suppress(Exception):  # already gone
                conn.disconnect()


def _connected(pool: Any) -> Any:
    conn = pool.make_connection()
    conn.connect()
    return conn


def tracker_for(near: NearCache | None, prefixes: Sequence[str], client: Any) -> Tracker | None:
    """The tracker of a process's near tier over ``client``, the cache's sync writer: one
    connection on the master's pool (standalone, or Sentinel's pool, which finds the current
    master on each connect), or one per primary of a Cluster. None when the tier is off."""
    if near is None:
        return None
    if isinstance(client, RedisCluster):
        return _cluster_tracker(near, prefixes, client)
    pool = client.connection_pool
    timeout = pool.connection_kwargs.get("socket_timeout") or 0.25
    return Tracker(near, lambda: [_connected(pool)], prefixes, timeout=timeout)


def _cluster_tracker(near: NearCache, prefixes: Sequence[str], cluster: Any) -> Tracker:
    """BCAST on every primary: each pushes the writes to its own slots. A slot that moves
    between tracked primaries keeps being pushed (by its new owner); a primary that fails or
    joins changes the cluster client's view, which ends the session before the next near hit
    (:meth:`Tracker._tick`), and the tier is flushed and tracks the new primaries."""

    def primaries() -> Hashable:
        return frozenset(node.name for node in cluster.get_primaries())

    def connect() -> list[Any]:
        conns: list[Any] = []
        try:
            for node in cluster.get_primaries():
                conns.append(_connected(cluster.get_redis_connection(node).connection_pool))
        except Exception:
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.disconnect()
            # A primary that does not answer may have failed over: learn the topology anew.
            with contextlib.suppress(Exception):
                cluster.nodes_manager.initialize()
            raise
        return conns

    timeout = cluster.nodes_manager.connection_kwargs.get("socket_timeout") or 0.25
    return Tracker(near, connect, prefixes, timeout=timeout, topology=primaries)
