"""A record call whose reply is lost is resent by the client library (its one immediate retry)
although Redis ran it: the call's token makes the resend answer the first run's ids, so every
event is counted and queued once.

The reply is lost for real: the client talks to Redis through a TCP relay that, once armed,
forwards the next EVALSHA to the shared Redis and closes the client's connection instead of
passing the reply on, as a connection dropped by a failover or a NAT would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cache import CacheService, build_cache
from cache.writebehind import ActivityEvent, WriteBehind, WriteBehindConfig
from config import Settings


class ReplyDropper:
    """A loopback relay to ``port``; :meth:`arm` makes it swallow the reply to the next
    EVALSHA and close that client connection."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self.armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        with client, server:
            while data := client.recv(65536):
                server.sendall(data)
                reply = server.recv(65536)  # redis-py waits for each reply: one at a time
                if b"EVALSHA" in data and self.armed.is_set():
                    self.armed.clear()
                    self.dropped.set()
                    return  # Redis ran the script; the client never hears of it
                client.sendall(reply)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropper(settings: Settings) -> Iterator[ReplyDropper]:
    relay = ReplyDropper(settings.redis_port)
    yield relay
    relay.close()


@pytest.fixture
def relayed(settings: Settings, dropper: ReplyDropper) -> Iterator[CacheService]:
    """The production clients (their retry included), through the relay."""
    service = build_cache(settings.model_copy(update={"redis_port": dropper.port}))
    yield service
    service.close()


def test_a_resent_record_counts_and_queues_its_events_once(
    relayed: CacheService, wb: WriteBehind, dropper: ReplyDropper
) -> None:
    buffer = WriteBehind(relayed.clients.writer, relayed.keys, WriteBehindConfig())
    buffer.record([ActivityEvent(1, "login")])  # the script is loaded: the next call runs it
    dropper.arm()
    ids = buffer.record([ActivityEvent(7, "login", times=3), ActivityEvent(7, "checkin")])
    assert dropper.dropped.is_set(), "the reply was not dropped: nothing was resent"
    entries = wb.client.xrange(wb.stream)
    assert [entry_id.decode() for entry_id, _ in entries][1:] == ids  # queued once
    counts = wb.activity(7)
    assert counts["days"] and sum(day["login"] for day in counts["days"]) == 3, counts
