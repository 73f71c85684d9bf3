"""Fail-open circuit breaker: after repeated Redis failures, stop trying for a while.

A dead Redis then costs a few attribute reads per call instead of a socket timeout. After
``reset_seconds`` one trial call is let through (half-open); its success closes the breaker,
its failure opens it again for another period.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 3,
        reset_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """May this call try Redis? Lock-free while closed, the common case."""
        if self._state is BreakerState.CLOSED:
            return True
        with self._lock:
            if self._state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self.reset_seconds:
                    return False
                # One trial call; if it never reports back, the next period allows another.
                self._state = BreakerState.HALF_OPEN
                self._opened_at = self._clock()
                return True
            if self._state is BreakerState.HALF_OPEN:
                if self._clock() - self._opened_at >= self.reset_seconds:
                    self._opened_at = self._clock()
                    return True
                return False
            return True

    def success(self) -> None:
        if self._state is BreakerState.CLOSED and not self._failures:
            return
        with self._lock:
            self._failures = 0
            self._state = BreakerState.CLOSED

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
                self.times_opened += 1
