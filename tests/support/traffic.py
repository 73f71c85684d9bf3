"""Traffic that runs through a rotation: requests in background threads, each counted under
what served it (a password, an engine), so a test can wait for more requests under the old
and then the new credential and assert that none failed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, Self, TypeVar

from tests.support.redis_procs import wait_for

K = TypeVar("K", bound=Hashable)


class Traffic(Generic[K]):
    """``request(n)`` makes the ``n``-th request of its thread and returns what served it;
    whatever it raises is a failure. Runs from ``with`` to its end."""

    def __init__(self, request: Callable[[int], K], threads: int = 1) -> None:
        self.request = request
        self.done: dict[K, int] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                served = self.request(n)
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.done[served] = self.done.get(served, 0) + 1
            n += 1

    def served(self, by: K, more: int, timeout: float = 60.0) -> None:
        """Wait for ``more`` requests served by ``by`` from now on."""
        seen = self.done.get(by, 0)
        wait_for(
            lambda: self.done.get(by, 0) >= seen + more,
            timeout,
            0.01,
            message=lambda: f"{more} more requests (failures: {self.failures[:3]})",
        )

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
