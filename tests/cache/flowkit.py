"""Driving the core's flows by hand, as a front does, with time as a number the test moves.

Shared by tests/cache/test_flow.py and tests/cache/test_loading.py (pure decision tests: no
Redis, no sleeps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cache import DataType
from cache.breaker import CircuitBreaker
from cache.flow import CacheCore
from cache.keys import Keys
from cache.metrics import CacheMetrics
from cache.ops import Flow, Op
from cache.outbox import MemoryOutbox
from cache.ttl import TtlPolicy

NOW = 1_000_000.0
TTL = 100


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def make_core(clock: Clock, *, rand: float = 0.5, beta: float = 1.0) -> CacheCore:
    return CacheCore(
        keys=Keys("t:"),
        policy=TtlPolicy(base={data_type: TTL for data_type in DataType}, jitter=0.0),
        metrics=CacheMetrics(),
        breaker=CircuitBreaker(failure_threshold=2, reset_seconds=5.0, clock=clock),
        outbox=MemoryOutbox(),
        lease_ms=1000,
        xfetch_beta=beta,
        clock=clock,
        monotonic=clock,
        timer=clock,
        rand=lambda: rand,
    )


def drive(flow: Flow, answer: Callable[[Op], Any]) -> tuple[Any, list[Op]]:
    """What a front does: perform each operation (here: ask ``answer``) and send it back."""
    ops: list[Op] = []
    result: Any = None
    send: Callable[[Any], Op] = flow.send
    while True:
        try:
            op = send(result)
        except StopIteration as done:
            return done.value, ops
        ops.append(op)
        try:
            result, send = answer(op), flow.send
        except BaseException as exc:
            result, send = exc, flow.throw


def entry(core: CacheCore, value: Any, *, age: float = 0.0, compute: float = 0.0) -> bytes:
    """An envelope written ``age`` seconds ago (fresh for TTL seconds after that)."""
    now = core.clock
    core.clock = lambda: NOW - age
    try:
        payload, _px = core.envelope(value, DataType.ANALYTICS, compute_time=compute)
    finally:
        core.clock = now
    return payload


def kinds(ops: list[Op]) -> list[str]:
    return [type(op).__name__ for op in ops]


def counters(core: CacheCore) -> Any:
    return core.metrics.of(DataType.ANALYTICS)
