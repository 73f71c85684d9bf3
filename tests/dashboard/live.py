"""The API served over real HTTP for a browser: uvicorn in a thread, on a port of its own."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


class LiveServer:
    """``with LiveServer(app) as server``: ``server.url`` answers once the app has started
    (its lifespan ran); leaving stops it and runs the lifespan's shutdown."""

    def __init__(self, app: FastAPI, startup_timeout: float = 30.0) -> None:
        # The socket is bound here, so the port is ours before the server starts: no window
        # for another process to take a "free" port between choosing and binding it.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API exited while starting (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not start within {self.startup_timeout}s")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
