"""The core's decisions without Redis: flows driven by hand, with an injected clock.

Each test drives a flow of cache/flow.py or cache/loading.py the way a front does (send the
answer of each operation back, throw an operation's error in) and checks which operations it
asked for and what it made of the answers. Time is a number the test moves; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cache import MISS, NOT_FOUND, DataType
from cache.breaker import BreakerState, CircuitBreaker
from cache.flow import CacheCore
from cache.keys import Keys
from cache.metrics import CacheMetrics
from cache.ops import (
    UNAVAILABLE,
    Fetched,
    Fill,
    Flow,
    Load,
    Op,
    Outcome,
    Pipeline,
    Read,
    ReadMany,
    ReleaseLease,
    Sleep,
    TakeLease,
    Unlink,
    WriteGuarded,
    WriteMany,
)
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


# --- around every command --------------------------------------------------------------------
def test_an_open_breaker_skips_redis_and_counts_it() -> None:
    clock = Clock()
    core = make_core(clock)
    assert core.admit()
    for _ in range(2):
        assert core.failed(ConnectionError("down")) is UNAVAILABLE
    assert core.breaker.state is BreakerState.OPEN
    assert not core.admit() and not core.admit()
    assert core.metrics.breaker_skips == 2
    clock.now += 5.0  # reset period over: one trial call, whose success closes it
    assert core.admit()
    core.succeeded()
    assert core.breaker.state is BreakerState.CLOSED


def test_replay_unlinks_the_oldest_first_with_leases_and_counts() -> None:
    core = make_core(Clock())
    core.outbox.add(["t:a"])
    core.outbox.add(["t:b", "t:c"])
    done, ops = drive(core.replay(), lambda op: 3)
    assert done is None
    assert [op.keys for op in ops if isinstance(op, Unlink)] == [
        ["t:a", "t:b", "t:c", "t:lease:{t:a}", "t:lease:{t:b}", "t:lease:{t:c}"]
    ]
    assert len(core.outbox) == 0 and core.metrics.outbox_replayed == 3


def test_a_failed_replay_keeps_the_keys_and_fails_the_command() -> None:
    core = make_core(Clock())
    core.outbox.add(["t:a", "t:b"])

    def down(op: Op) -> Any:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        drive(core.replay(), down)
    assert core.outbox.drain() == ["t:a", "t:b"] and core.metrics.outbox_replayed == 0


# --- reads and writes ------------------------------------------------------------------------
def test_get_counts_hits_stale_and_misses() -> None:
    core = make_core(Clock())
    fresh, stale = entry(core, "f"), entry(core, "s", age=TTL + 1)
    assert core.read_one(fresh, "t:k", DataType.ANALYTICS) == "f"
    assert core.read_one(stale, "t:k", DataType.ANALYTICS) == "s"
    for nothing in (None, UNAVAILABLE, b"foreign"):
        assert core.read_one(nothing, "t:k", DataType.ANALYTICS) is MISS
    many = core.read_many(["t:a", "t:b"], [fresh, None], DataType.ANALYTICS)
    assert many == ["f", MISS]
    assert core.read_many(["t:a", "t:b"], UNAVAILABLE, DataType.ANALYTICS) == [MISS, MISS]
    c = counters(core)
    assert (c.hits, c.stale, c.misses, c.errors) == (2, 1, 6, 1)


def test_a_disabled_cache_asks_redis_nothing() -> None:
    core = make_core(Clock())
    core.enabled = False
    assert drive(core.set("t:k", 1, DataType.ANALYTICS, None, 0), pytest.fail)[0] is False
    assert drive(core.delete(["t:k"]), pytest.fail)[0] == 0
    assert drive(core.bump(["tag"], ()), pytest.fail)[0] is False
    fetched, ops = drive(core.fetch("t:k", lambda: 7, DataType.ANALYTICS), lambda op: 7)
    assert kinds(ops) == ["Load"] and fetched == Fetched(7, Outcome.MISS, None)
    assert len(core.outbox) == 0


def test_write_through_is_guarded_and_queued_for_invalidation_when_redis_is_down() -> None:
    core = make_core(Clock())
    stored, ops = drive(core.write_through("t:m", {"v": 3}, 3, DataType.MEMBER, None), lambda op: 1)
    assert stored is True
    (op,) = ops
    assert isinstance(op, WriteGuarded)
    assert (op.key, op.lease_key, op.version) == ("t:m", "t:lease:{t:m}", 3)

    refused, _ = drive(core.write_through("t:m", {"v": 2}, 2, DataType.MEMBER, None), lambda op: 0)
    assert refused is False and core.metrics.of(DataType.MEMBER).writes_rejected == 1
    assert len(core.outbox) == 0

    down = core.write_through("t:m", {"v": 4}, 4, DataType.MEMBER, None)
    assert drive(down, lambda op: UNAVAILABLE)[0] is False
    assert core.outbox.drain() == ["t:m"]  # an old value must not outlive the outage
    assert core.metrics.of(DataType.MEMBER).skipped_writes == 1


def test_delete_takes_the_leases_and_waits_in_the_outbox_when_down() -> None:
    core = make_core(Clock())
    removed, ops = drive(core.delete(["t:a"]), lambda op: 2)
    assert removed == 2 and isinstance(ops[0], Unlink)
    assert ops[0].keys == ["t:a", "t:lease:{t:a}"]  # in-flight fills of t:a then fail
    assert drive(core.delete(["t:a", "t:b"]), lambda op: UNAVAILABLE)[0] == 0
    assert core.outbox.drain() == ["t:a", "t:b"]


def test_set_many_guards_each_key_with_versions_and_counts_each() -> None:
    core = make_core(Clock())
    items = {"t:1": "one", "t:2": "two"}
    flow = core.set_many(items, DataType.MEMBER, None, {"t:1": 4, "t:2": 1})
    stored, ops = drive(flow, lambda op: [1, 0])
    (op,) = ops
    assert isinstance(op, WriteMany) and op.guarded
    assert [(item.key, item.lease_key, item.version) for item in op.items] == [
        ("t:1", "t:lease:{t:1}", 4),
        ("t:2", "t:lease:{t:2}", 1),
    ]
    assert stored is False  # not every key was written
    c = core.metrics.of(DataType.MEMBER)
    assert (c.writes, c.writes_rejected) == (1, 1)

    plain, ops = drive(core.set_many(items, DataType.MEMBER, None, None), lambda op: [1, 1])
    assert plain is True and isinstance(ops[0], WriteMany) and not ops[0].guarded


# --- generations -----------------------------------------------------------------------------
def test_generations_start_only_the_missing_keys_at_random_values() -> None:
    core = make_core(Clock())

    def answer(op: Op) -> Any:
        if isinstance(op, ReadMany):  # of the master: never a replica behind a bump
            return [b"41", None]
        assert isinstance(op, Pipeline)
        (name, key, start, nx), *gets = op.commands
        assert (name, key, nx) == ("SET", "t:gen:b", "NX") and start > 1
        assert gets == [("GET", "t:gen:a"), ("GET", "t:gen:b")]
        return [True, b"41", str(start).encode()]

    gens, ops = drive(core.generations(["a", "b"]), answer)
    assert kinds(ops) == ["ReadMany", "Pipeline"] and gens[0] == 41 and gens[1] > 1
    assert drive(core.generations(["a"]), lambda op: UNAVAILABLE)[0] is None
    assert drive(core.generations([]), pytest.fail)[0] == ()


def test_bump_is_one_round_trip_and_queues_everything_when_down() -> None:
    core = make_core(Clock())
    done, ops = drive(core.bump(["a"], ["t:m"]), lambda op: [None, 8, 2])
    assert done is True
    (op,) = ops
    assert isinstance(op, Pipeline)
    assert [command[0] for command in op.commands] == ["SET", "INCR", "UNLINK"]
    assert op.commands[2] == ("UNLINK", "t:m", "t:lease:{t:m}")
    assert drive(core.bump(["a"], ["t:m"]), lambda op: UNAVAILABLE)[0] is False
    assert core.outbox.drain() == ["t:gen:a", "t:m"]


# --- fetch: single flight ----------------------------------------------------------------------
def test_a_fresh_entry_is_a_hit_and_asks_for_nothing_else() -> None:
    core = make_core(Clock())
    fetched, ops = drive(
        core.fetch("t:k", pytest.fail, DataType.ANALYTICS), lambda op: entry(core, "v", age=10)
    )
    assert kinds(ops) == ["Read"]
    assert fetched == Fetched("v", Outcome.HIT, TTL - 10)
    assert counters(core).hits == 1


def test_a_stale_entry_is_served_while_another_caller_holds_the_lease() -> None:
    core = make_core(Clock())
    old = entry(core, "old", age=TTL + 5)
    fetched, ops = drive(
        core.fetch("t:k", pytest.fail, DataType.ANALYTICS),
        lambda op: old if isinstance(op, Read) else False,
    )
    assert kinds(ops) == ["Read", "TakeLease"]
    assert fetched == Fetched("old", Outcome.STALE, 0.0)
    assert counters(core).stale == 1


def test_a_stale_entry_is_refreshed_by_the_lease_holder() -> None:
    core = make_core(Clock())
    old = entry(core, "old", age=TTL + 5)
    reads = iter([old, old])  # the second read: nobody filled meanwhile

    def answer(op: Op) -> Any:
        if isinstance(op, Read):
            return next(reads)
        if isinstance(op, Load):
            return op.loader()
        return True if isinstance(op, TakeLease) else 1

    fetched, ops = drive(core.fetch("t:k", lambda: "new", DataType.ANALYTICS), answer)
    assert kinds(ops) == ["Read", "TakeLease", "Read", "Load", "Fill"]
    assert fetched == Fetched("new", Outcome.MISS, float(TTL))
    c = counters(core)
    assert (c.misses, c.loads, c.writes, c.stale) == (1, 1, 1, 0)


def test_an_early_refresh_is_drawn_from_the_compute_time() -> None:
    """XFetch: a slow value (10 s to compute) 5 s before expiry, with a draw near 1."""
    core = make_core(Clock(), rand=0.999)
    near = entry(core, "v", age=TTL - 5, compute=10.0)
    fetched, ops = drive(
        core.fetch("t:k", pytest.fail, DataType.ANALYTICS),
        lambda op: near if isinstance(op, Read) else False,  # someone else refreshes
    )
    assert kinds(ops) == ["Read", "TakeLease"]
    assert fetched.outcome is Outcome.HIT and fetched.fresh_for == 5.0  # still fresh
    relaxed = make_core(Clock(), rand=0.0)  # the draw that refreshes latest
    _fetched, ops = drive(relaxed.fetch("t:k", pytest.fail, DataType.ANALYTICS), lambda op: near)
    assert kinds(ops) == ["Read"]


def test_the_version_of_a_loaded_row_goes_with_its_fill() -> None:
    core = make_core(Clock())

    def answer(op: Op) -> Any:
        if isinstance(op, Load):
            return op.loader()
        return None if isinstance(op, Read) else (True if isinstance(op, TakeLease) else 0)

    loader = lambda: {"version": 7}  # noqa: E731
    flow = core.fetch("t:m", loader, DataType.MEMBER, version_of=lambda row: row["version"])
    fetched, ops = drive(flow, answer)
    fill = ops[-1]
    assert isinstance(fill, Fill) and fill.version == 7 and fill.lease_key == "t:lease:{t:m}"
    # Refused (a newer version is cached): the caller has its value, nobody may keep it.
    assert fetched == Fetched({"version": 7}, Outcome.MISS, None)
    assert core.metrics.of(DataType.MEMBER).writes_rejected == 1

    absent = core.fetch("t:m", lambda: NOT_FOUND, DataType.MEMBER, version_of=pytest.fail)
    fetched, ops = drive(absent, answer)
    assert fetched.value is NOT_FOUND and isinstance(ops[-1], Fill) and ops[-1].version == 0


def test_a_failed_load_releases_the_lease_and_raises() -> None:
    core = make_core(Clock())

    def broken() -> Any:
        raise LookupError("db says no")

    def answer(op: Op) -> Any:
        if isinstance(op, Load):
            return op.loader()
        return None if isinstance(op, Read) else True

    performed: list[Op] = []

    def recording(op: Op) -> Any:
        performed.append(op)
        return answer(op)

    with pytest.raises(LookupError):
        drive(core.fetch("t:k", broken, DataType.ANALYTICS), recording)
    assert kinds(performed) == ["Read", "TakeLease", "Read", "Load", "ReleaseLease"]
    release = performed[-1]
    assert isinstance(release, ReleaseLease) and release.lease_key == "t:lease:{t:k}"
    assert counters(core).load_errors == 1


def test_waiters_poll_until_the_fill_and_count_a_hit() -> None:
    clock = Clock()
    core = make_core(clock)
    filled = entry(core, "computed")
    reads = iter([None, None, filled])

    def answer(op: Op) -> Any:
        if isinstance(op, Sleep):
            clock.now += op.seconds
            return None
        return next(reads) if isinstance(op, Read) else False

    fetched, ops = drive(core.fetch("t:k", pytest.fail, DataType.ANALYTICS), answer)
    assert kinds(ops) == ["Read", "TakeLease", "Sleep", "Read", "Sleep", "Read"]
    sleeps = [op.seconds for op in ops if isinstance(op, Sleep)]
    assert sleeps == [0.002, 0.004]  # backing off
    assert fetched.outcome is Outcome.HIT and fetched.value == "computed"
    assert counters(core).lease_waits == 1


def test_a_waiter_loads_itself_when_the_lease_holder_never_fills() -> None:
    clock = Clock()
    core = make_core(clock)

    def answer(op: Op) -> Any:
        if isinstance(op, Sleep):
            clock.now += op.seconds
            return None
        if isinstance(op, Load):
            return op.loader()
        if isinstance(op, TakeLease):
            return clock.now > NOW + 1  # the holder's lease (1000 ms) has expired
        return None if isinstance(op, Read) else 1

    fetched, ops = drive(core.fetch("t:k", lambda: "mine", DataType.ANALYTICS), answer)
    assert clock.now >= NOW + 1  # waited the lease out, in simulated time
    assert kinds(ops)[-3:] == ["TakeLease", "Load", "Fill"]
    assert fetched == Fetched("mine", Outcome.MISS, float(TTL))


def test_redis_unavailable_runs_the_loader_and_stores_nothing() -> None:
    core = make_core(Clock())

    def answer(op: Op) -> Any:
        return op.loader() if isinstance(op, Load) else UNAVAILABLE

    fetched, ops = drive(core.fetch("t:k", lambda: 5, DataType.ANALYTICS), answer)
    assert kinds(ops) == ["Read", "Load"]
    assert fetched == Fetched(5, Outcome.MISS, None)


def test_a_front_that_made_the_first_read_continues_the_flow_from_it() -> None:
    """fetch's hit path runs no flow: the front reads, CacheCore.fetched decides."""
    core = make_core(Clock())
    hit = core.fetched(entry(core, "v", age=1), "t:k", DataType.ANALYTICS)
    assert hit == Fetched("v", Outcome.HIT, TTL - 1)

    seen = core.fetched(entry(core, "old", age=TTL + 1), "t:k", DataType.ANALYTICS)
    assert not isinstance(seen, Fetched) and seen.entry is not None and not seen.fresh
    flow = core.fetch("t:k", pytest.fail, DataType.ANALYTICS, seen=seen)
    fetched, ops = drive(flow, lambda op: False)  # someone else holds the lease
    assert kinds(ops) == ["TakeLease"]  # no second read of the key
    assert fetched == Fetched("old", Outcome.STALE, 0.0)

    down = core.fetched(UNAVAILABLE, "t:k", DataType.ANALYTICS)
    assert not isinstance(down, Fetched) and down.unavailable
    flow = core.fetch("t:k", lambda: 3, DataType.ANALYTICS, seen=down)
    fetched, ops = drive(flow, lambda op: 3)
    assert kinds(ops) == ["Load"] and fetched == Fetched(3, Outcome.MISS, None)
