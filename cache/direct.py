"""A dedicated connection per thread for the read hot path (GET and MGET), standalone only.

redis-py's client wraps every command in a pool checkout and return, retry and event
machinery that costs more than the loopback round trip it surrounds. Reads are the cache's
hot path, so each thread keeps one connection of its own (made with the pool's own connection
class and settings, outside the pool's cap, so bursts of threads never queue) and talks to it
with redis-py's protocol layer directly. Writes and scripts keep using the client.

A connection that fails is dropped and, after a connection error on a connection that used to
work (a restarted server), retried once on a fresh one; timeouts are not retried. Connections
of threads that have ended are closed when the next thread opens one, and all on close().
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from redis.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError


class DirectReader:
    def __init__(self, pool: ConnectionPool) -> None:
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[tuple[weakref.ref[threading.Thread], AbstractConnection]] = []

    def _connection(self) -> AbstractConnection:
        connection: AbstractConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connection_class(**self._connection_kwargs)
            with self._lock:
                self._close_orphans()
                self._open.append((weakref.ref(threading.current_thread()), connection))
            self._local.connection = connection
        return connection

    def _close_orphans(self) -> None:
        alive = []
        for thread, connection in self._open:
            if (owner := thread()) is not None and owner.is_alive():
                alive.append((thread, connection))
            else:
                connection.disconnect()
        self._open = alive

    def execute(self, *args: Any) -> Any:
        connection = self._connection()
        was_connected = connection._sock is not None
        try:
            connection.send_command(*args)
            return connection.read_response()
        except RedisConnectionError:
            connection.disconnect()
            if not was_connected:
                raise
            connection.send_command(*args)  # the server restarted: one fresh try
            try:
                return connection.read_response()
            except BaseException:
                connection.disconnect()
                raise
        except BaseException:
            connection.disconnect()  # the reply may still be in flight: never reuse it
            raise

    def get(self, key: str) -> Any:
        return self.execute("GET", key)

    def mget(self, keys: list[str]) -> Any:
        return self.execute("MGET", *keys)

    def close(self) -> None:
        with self._lock:
            for _, connection in self._open:
                connection.disconnect()
            self._open = []
        self._local = threading.local()
