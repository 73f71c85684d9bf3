"""The near tier's own rules, without Redis: tickets, flushes, versions, the byte budget."""

from __future__ import annotations

import gc
import time
import tracemalloc

import orjson
import pytest

from cache import codec
from cache.metrics import NearCounters
from cache.near import NearCache, near_types, off_reason
from cache.types import DataType
from config import load_settings


def _entry(value: object, version: int = 1, fresh: float = 60.0) -> codec.Entry:
    now = time.time()
    return codec.decode(
        codec.encode(value, created_at=now, soft_expires_at=now + fresh, version=version)
    )


def _live(max_bytes: int = 1 << 20) -> NearCache:
    near = NearCache(max_bytes, {DataType.MEMBER}, NearCounters())
    near.live_until = time.time() + 3600
    return near


def test_a_read_invalidated_in_flight_is_not_kept() -> None:
    near = _live()
    ticket = near.seq  # taken before the GET
    near.invalidate(["k"])  # handled before the GET's reply
    assert near.keep("k", _entry({"v": 1}), ticket) is None
    assert near.hit("k") is None and near.counters.refused == 1
    # A read that starts after the invalidation is kept; another key's push does not matter.
    ticket = near.seq
    near.invalidate(["other"])
    assert near.keep("k", _entry({"v": 2}), ticket) is not None
    node = near.hit("k")
    assert node is not None and node.entry.value == {"v": 2}


def test_a_flush_refuses_every_read_in_flight_and_drops_everything() -> None:
    near = _live()
    assert near.keep("a", _entry(1), near.seq) is not None
    ticket = near.seq
    near.invalidate(None)  # FLUSHDB: a null key list
    assert len(near) == 0 and near.held_bytes == 0 and near.counters.flushes == 1
    assert near.keep("b", _entry(2), ticket) is None


def test_nothing_is_served_or_kept_while_tracking_is_down() -> None:
    near = _live()
    assert near.keep("a", _entry(1), near.seq) is not None
    near.live_until = time.time() - 1  # no message from the tracking connection lately
    assert near.hit("a") is None
    assert near.keep("b", _entry(2), near.seq) is None
    near.down()
    assert len(near) == 0


def test_a_newer_version_is_never_replaced_and_stale_entries_are_not_served() -> None:
    near = _live()
    near.keep("k", _entry({"v": 3}, version=3), near.seq)
    near.keep("k", _entry({"v": 2}, version=2), near.seq)
    node = near.hit("k")
    assert node is not None and node.entry.version == 3
    near.keep("s", _entry(1, fresh=-1), near.seq)
    assert near.hit("s") is None  # soft-expired: the core's fetch decides, from Redis


def test_the_dirty_set_is_bounded_and_then_refuses_like_a_flush() -> None:
    import cache.near as near_module

    near = _live()
    ticket = near.seq
    for n in range(near_module.MAX_DIRTY + 1):
        near.invalidate([f"x{n}"])
    assert len(near._dirty) <= near_module.MAX_DIRTY
    assert near.keep("untouched", _entry(1), ticket) is None  # cleared: counts as a flush


@pytest.mark.slow
def test_budget_accounting_over_a_million_distinct_keys() -> None:
    """A million inserts through a 1 MB budget: the total never passes it, evictions keep
    the least recently used, and the total is the sum of what the entries were charged."""
    budget = 1024 * 1024
    near = _live(budget)
    entry = _entry({"id": 0})
    fields = _fields(entry)
    for n in range(1_000_000):
        near.keep(f"m:{n}", codec.Entry({"id": n}, *fields), near.seq)
    assert near.held_bytes <= budget
    assert near.held_bytes == sum(node.size for node in near._nodes.values())
    assert near.counters.evictions == 1_000_000 - len(near) and len(near) > 1000
    assert near.hit("m:999999") is not None and near.hit("m:0") is None


def test_budget_holds_in_real_memory() -> None:
    """The estimate (cache.near.sizeof + ENTRY_OVERHEAD) bounds what the tier really
    allocates: 25,000 distinct member-like records through a 2 MB budget, and tracemalloc's
    count of what the tier then holds stays within the budget + 10%."""
    budget = 2 * 1024 * 1024
    near = _live(budget)
    record = {
        "id": 0,
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "tier": "gold",
        "status": "active",
        "country": "GB",
        "joined": "2024-01-02",
        "score": 12.5,
        "tags": ["a", "b", "c"],
        "version": 3,
    }
    raw = codec.encode(record, created_at=time.time(), soft_expires_at=time.time() + 60)
    fields = _fields(codec.decode(raw))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(25_000):
            # A decoded value of its own per key, as a GET gives.
            value = orjson.loads(raw[codec.HEADER_SIZE :])
            near.keep(f"membership:member:{n}", codec.Entry(value, *fields), near.seq)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert near.held_bytes <= budget and near.counters.evictions > 20_000
    assert used <= budget * 1.10, (used, budget, len(near))


def _fields(entry: codec.Entry) -> tuple[float, float, float, int]:
    return entry.created_at, entry.soft_expires_at, entry.compute_time, entry.version


def test_rendered_bodies_are_charged() -> None:
    near = _live()
    node = near.keep("k", _entry({"v": 1}), near.seq)
    assert node is not None
    before = near.held_bytes
    near.attach(node, b"x" * 1000, b'"etag"')
    assert near.held_bytes >= before + 1000 and node.rendered == (b"x" * 1000, b'"etag"')


def test_which_types_and_settings_turn_the_tier_on() -> None:
    assert {DataType.MEMBER, DataType.LOOKUP, DataType.ANALYTICS} <= near_types()
    on = load_settings(_env_file=None)
    assert off_reason(on) is None
    assert off_reason(load_settings(cache_enabled=False, _env_file=None)) is not None
    assert off_reason(load_settings(cache_near_enabled=False, _env_file=None)) is not None
    cluster = load_settings(redis_cluster_nodes="127.0.0.1:7000", _env_file=None)
    assert off_reason(cluster) is None  # tracked per primary
    replicas = load_settings(redis_read_from_replica=True, _env_file=None)
    assert "replica" in (off_reason(replicas) or "")


def test_a_big_push_drops_what_it_names_and_refuses_reads_in_flight() -> None:
    near = _live()
    for n in range(10):
        near.keep(f"k{n}", _entry(n), near.seq)
    ticket = near.seq
    near.invalidate([f"k{n}" for n in range(5)] + [f"x{n}" for n in range(5000)])
    assert sorted(near._nodes) == [f"k{n}" for n in range(5, 10)]
    assert near.keep("k0", _entry(0), ticket) is None
    assert near.counters.invalidations == 5005


def test_a_forked_child_serves_nothing_it_inherited() -> None:
    import os

    near = _live()
    assert near.keep("k", _entry(1), near.seq) is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own tracking would have to start first
        os.write(write, b"1" if near.hit("k") is None and len(near) == 0 else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert near.hit("k") is not None  # the parent's tier is untouched


def test_generations_are_held_under_the_same_rules_as_entries() -> None:
    near = _live()
    keys = ["gen:a", "gen:b"]
    ticket = near.seq
    near.invalidate(["gen:b"])  # a bump pushed before the read's reply
    near.keep_generations(keys, (1, 2), ticket)
    assert near.generations(keys) is None
    near.keep_generations(keys, (1, 3), near.seq)
    assert near.generations(keys) == (1, 3)
    near.invalidate(["gen:a"])  # another process's bump
    assert near.generations(keys) is None and near.generations(["gen:b"]) == (3,)
    near.drop(["gen:b"])  # this process's own bump
    assert near.generations(["gen:b"]) is None
    near.keep_generations(keys, (4, 5), near.seq)
    near.down()  # tracking lost: nothing held, nothing kept
    near.keep_generations(keys, (4, 5), near.seq)
    assert near.generations(keys) is None


def test_recent_lists_held_keys_most_recently_read_first() -> None:
    near = _live()
    for key in ("a", "b", "c"):
        near.keep(key, _entry({"k": key}), near.seq)
    assert near.hit("a") is not None  # read again: now the most recent
    near.invalidate(["b"])
    assert near.recent() == ["a", "c"]
    near.flush()
    assert near.recent() == []
