"""A webhook receiver on loopback for the alert tests: a real HTTP server in a thread.

It records every POST (body as JSON, headers) and answers from a script: ``answers`` are the
statuses of the first requests, in order, then ``default``. It can be started on a port
chosen beforehand (:func:`free_port`), so a test can send to a receiver that is not there
yet (connection refused) and start it later on the same address.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver:
    def __init__(
        self, port: int | None = None, answers: Iterable[int] = (), default: int = 200
    ) -> None:
        self.port = port if port is not None else free_port()
        self.answers = list(answers)
        self.default = default
        self.received: list[dict[str, Any]] = []  # every POST body, answered or not
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._lock:
                    receiver.received.append(body)
                    receiver.headers.append(dict(self.headers.items()))
                    status = receiver.answers.pop(0) if receiver.answers else receiver.default
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def wait_for(
        self, accept: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll the received bodies until ``accept`` says yes; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.bodies()
            if accept(seen):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {self.bodies()!r}")

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
