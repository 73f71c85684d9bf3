"""A pipelined connection per event loop for the async read hot path (GET, MGET), standalone.

The asyncio counterpart of cache/direct.py. redis.asyncio wraps every command in a pool
checkout, a timeout context per read and write, retry and event machinery that cost more than
the loopback round trip they surround, and under concurrency it needs one connection per
request in flight. Here the readers of an event loop share one connection: each writes its
command as it comes and awaits its own reply, replies being matched in command order (RESP2,
parsed by hiredis), so a burst of hits costs a few socket writes and reads. Writes and scripts
keep using the client.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection as TcpConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _Pipe(asyncio.Protocol):
    """One Redis connection whose commands are pipelined: every caller writes its command at
    once and awaits its own reply; replies come back in command order (RESP2)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self._loop = loop
        self._timeout = timeout
        self._parser = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False
        self.lost = False
        self.served = False  # a reply came back: a later connection error means a restart

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while (reply := self._parser.gets()) is not False:
            if not self._waiting:  # a reply nobody asked for: the stream is out of step
                self.close(abort=True)
                return
            future = self._waiting.popleft()[0]
            self.served = True
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        error: RedisError = (
            RedisTimeoutError("Timeout reading from Redis")
            if self._timed_out
            else RedisConnectionError(f"Connection to Redis lost: {exc or 'closed'}")
        )
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)

    def call(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost or self._transport is None:
            raise RedisConnectionError("Connection to Redis lost")
        future = self._loop.create_future()
        deadline = self._loop.time() + self._timeout if self._timeout else 0.0
        self._waiting.append((future, deadline))
        self._transport.write(packed)
        if self._timeout and self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._check)
        return future

    def _check(self) -> None:
        """One timer for the whole pipe: the oldest reply is overdue, or the next one is due."""
        self._watchdog = None
        if not self._waiting or self.lost:
            return
        deadline = self._waiting[0][1]
        if self._loop.time() >= deadline:
            self._timed_out = True
            self.close(abort=True)  # a late reply would be taken for the next command's
        else:
            self._watchdog = self._loop.call_at(deadline, self._check)

    def close(self, *, abort: bool = False) -> None:
        if self._transport is not None and not self.lost:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a connect task's failure as seen: the callers that awaited it re-raised it."""
    if not task.cancelled():
        task.exception()


def _pack(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class DirectAsyncReader:
    """GET and MGET over one pipelined connection per event loop, standalone TCP only.

    Concurrent readers of a loop share its connection: their commands go out as they come and
    their replies are matched in order, so a burst of hits costs a few socket writes and reads
    instead of a pool checkout each. The handshake (AUTH, SELECT, CLIENT SETNAME) follows the
    pool's settings; replies later than the socket timeout fail every pending read with
    TimeoutError and drop the connection. After a connection error on a connection that had
    worked (a restarted server) a read is retried once on a fresh one; timeouts are not.
    """

    def __init__(self, pool: aioredis.ConnectionPool) -> None:
        kwargs = pool.connection_kwargs
        self._host = kwargs.get("host", "localhost")
        self._port = int(kwargs.get("port", 6379))
        self._timeout: float | None = kwargs.get("socket_timeout")
        self._connect_timeout: float | None = kwargs.get("socket_connect_timeout")
        handshake = []
        password = kwargs.get("password")
        if password:
            username = kwargs.get("username")
            handshake.append(_pack("AUTH", *([username] if username else []), password))
        if int(kwargs.get("db") or 0):
            handshake.append(_pack("SELECT", int(kwargs["db"])))
        if kwargs.get("client_name"):
            handshake.append(_pack("CLIENT", "SETNAME", kwargs["client_name"]))
        self._handshake = handshake
        self._pipes: dict[asyncio.AbstractEventLoop, _Pipe] = {}
        self._connecting: dict[asyncio.AbstractEventLoop, asyncio.Task[_Pipe]] = {}

    @staticmethod
    def supports(pool: aioredis.ConnectionPool) -> bool:
        """Plain TCP, with a password or none; TLS, Unix sockets and credential providers keep
        the pool."""
        return pool.connection_class is TcpConnection and not pool.connection_kwargs.get(
            "credential_provider"
        )

    async def _pipe(self, loop: asyncio.AbstractEventLoop) -> _Pipe:
        pipe = self._pipes.get(loop)
        if pipe is not None and not pipe.lost:
            return pipe
        connecting = self._connecting.get(loop)
        if connecting is None or connecting.done():
            # A task of its own, awaited by every caller of the loop: one connection, and a
            # caller cancelled meanwhile does not cancel it for the others.
            connecting = self._connecting[loop] = loop.create_task(self._connect(loop))
            connecting.add_done_callback(_retrieved)
        return await asyncio.shield(connecting)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Pipe:
        for other in [other for other in self._pipes if other.is_closed()]:
            del self._pipes[other]
        try:
            async with asyncio.timeout(self._connect_timeout):
                _transport, pipe = await loop.create_connection(
                    lambda: _Pipe(loop, self._timeout), self._host, self._port
                )
                try:
                    for reply in [pipe.call(command) for command in self._handshake]:
                        await reply
                except BaseException:
                    pipe.close(abort=True)
                    raise
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(
                f"Error connecting to {self._host}:{self._port}: {exc}"
            ) from exc
        self._pipes[loop] = pipe
        return pipe

    async def execute(self, packed: bytes) -> Any:
        loop = asyncio.get_running_loop()
        pipe = self._pipes.get(loop)
        if pipe is None or pipe.lost:
            pipe = await self._pipe(loop)
        try:
            return await pipe.call(packed)
        except RedisConnectionError:
            if not pipe.served:
                raise
            pipe = await self._pipe(loop)  # the server restarted: one fresh try
            return await pipe.call(packed)

    async def get(self, key: str) -> Any:
        data = key.encode()
        return await self.execute(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(data), data))

    async def mget(self, keys: Sequence[str]) -> Any:
        return await self.execute(_pack("MGET", *keys))

    def close(self) -> None:
        """Close every connection; those of other loops from their own loop."""
        pipes, self._pipes = self._pipes, {}
        for loop, pipe in pipes.items():
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                pipe.close()
            else:
                loop.call_soon_threadsafe(pipe.close)
