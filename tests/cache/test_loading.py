"""The single-flight fetch without Redis (cache/loading.py): what one read decides, leases,
stale serving, early refresh, waiting, the version guard; driven by hand (flowkit.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cache import NOT_FOUND, DataType
from cache.errors import LoadDeclined
from cache.ops import (
    UNAVAILABLE,
    Fetched,
    Fill,
    Load,
    Op,
    Outcome,
    Read,
    ReleaseLease,
    Sleep,
    TakeLease,
)
from tests.cache.flowkit import NOW, TTL, Clock, counters, drive, entry, kinds, make_core


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


@pytest.mark.parametrize("cached", [False, True])
def test_a_declined_load_is_neither_an_error_nor_a_miss(cached: bool) -> None:
    """The source refused the caller's request (LoadDeclined: a 404 or 422 of the API): the
    lease goes, nothing is stored, and the fetch counts as declined, not as a miss."""
    core = make_core(Clock())
    if not cached:
        core.enabled = False  # the bypass path counts the same

    def refused() -> Any:
        raise LoadDeclined("unknown name")

    def answer(op: Op) -> Any:
        if isinstance(op, Load):
            return op.loader()
        return None if isinstance(op, Read) else True

    with pytest.raises(LoadDeclined):
        drive(core.fetch("t:k", refused, DataType.ANALYTICS), answer)
    c = counters(core)
    assert (c.declined, c.misses, c.load_errors, c.loads) == (1, 0, 0, 0)
    assert core.metrics.snapshot()["total"]["declined"] == 1


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
