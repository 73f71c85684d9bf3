"""The core's decisions without Redis (cache/flow.py, cache/generations.py).

Each test drives a flow the way a front does (tests/cache/flowkit.py: send the answer of each
operation back, throw an operation's error in) and checks which operations it asked for and
what it made of the answers. Time is a number the test moves; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest

from cache import MISS, NOT_FOUND, DataType, codec
from cache.breaker import BreakerState
from cache.ops import (
    UNAVAILABLE,
    Fetched,
    Op,
    Outcome,
    Pipeline,
    ReadMany,
    Retire,
    Unlink,
    WriteGuarded,
    WriteMany,
)
from tests.cache.flowkit import TTL, Clock, counters, drive, entry, kinds, make_core


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


def test_a_failed_write_through_is_replayed_as_a_retirement_at_its_version() -> None:
    """Not a DELETE: an older write still on its way must find the version there."""
    core = make_core(Clock())
    stored, _ops = drive(
        core.write_through("t:m", {"v": 7}, 7, DataType.MEMBER, None), lambda op: UNAVAILABLE
    )
    assert stored is False
    core.outbox.add(["t:m"], {"t:m": 5})  # an older one failed too: the newest version stays
    core.outbox.add(["t:g"])  # a plain delete (a generation, a bulk change's record)
    _done, ops = drive(core.replay(), lambda op: [1] if isinstance(op, Retire) else 2)
    assert [op.keys for op in ops if isinstance(op, Unlink)] == [["t:g", "t:lease:{t:g}"]]
    (retire,) = [op for op in ops if isinstance(op, Retire)]
    (item,) = retire.items
    assert (item.key, item.lease_key, item.version) == ("t:m", "t:lease:{t:m}", 7)
    assert codec.decode(item.payload).retired
    assert len(core.outbox) == 0 and core.metrics.outbox_replayed == 2
    # Read back, a retired key is a plain miss: no value, no error counted.
    assert core.read_one(item.payload, "t:m", DataType.MEMBER) is MISS
    assert core.metrics.of(DataType.MEMBER).errors == 0


def test_a_failed_replay_keeps_the_keys_and_fails_the_command() -> None:
    core = make_core(Clock())
    core.outbox.add(["t:a", "t:b"])

    def down(op: Op) -> Any:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        drive(core.replay(), down)
    assert core.outbox.drain() == ["t:a", "t:b"] and core.metrics.outbox_replayed == 0
    core.outbox.add(["t:c"], {"t:c": 3})
    with pytest.raises(ConnectionError):
        drive(core.replay(), down)
    assert core.outbox.drain_pending() == [("t:c", 3)]  # its version kept


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


def test_envelopes_are_envelope_of_each_and_refuse_not_found() -> None:
    clock = Clock()
    core = make_core(clock)  # no jitter: every envelope of one instant is the same
    values = [{"id": 1}, [1, 2], "text"]
    assert core.envelopes(values, DataType.MEMBER, [3, 4, 5]) == [
        core.envelope(value, DataType.MEMBER, version=version)
        for value, version in zip(values, [3, 4, 5], strict=True)
    ]
    with pytest.raises(ValueError, match="NOT_FOUND"):
        core.envelopes([{"id": 1}, NOT_FOUND], DataType.MEMBER, [1, 1])


def test_a_replay_on_its_way_keeps_its_keys_counted_and_to_itself() -> None:
    core = make_core(Clock())
    core.outbox.add(["t:a"])
    core.outbox.add(["t:b"], {"t:b": 2})
    flying = core.replay()
    assert isinstance(next(flying), Unlink)  # suspended at its first command
    assert len(core.outbox) == 2  # still to reach Redis: a metric or a test reads 2, not 0
    assert list(core.replay()) == []  # a second replay meanwhile takes nothing
    core.outbox.add(["t:b"], {"t:b": 3})  # a newer write-through failed meanwhile
    assert list(core.replay()) == []  # b at 3 waits for b at 2's replay to settle
    assert isinstance(flying.send(1), Retire)
    assert len(core.outbox) == 3  # a, and b at 2, on their way; b at 3 waiting
    # The batch applied, it is forgotten; the newer version is the replay's next batch.
    again = flying.send([1])
    assert isinstance(again, Retire) and [item.version for item in again.items] == [3]
    with pytest.raises(StopIteration):
        flying.send([1])
    assert len(core.outbox) == 0 and core.metrics.outbox_replayed == 3
