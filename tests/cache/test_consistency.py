"""The consistency monitor's samples (cache/consistency.py) on the shared Redis: sampling at
the configured rate, the bound on what is kept, claiming due checks once, the figures."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cache import CacheService
from cache.consistency import CLAIM_LEASE_S, MonitorConfig, Samples, Seen, Tally, nines
from config import ConfigError, Settings, load_settings
from tasks.monitor import RUN_BUDGET_S
from workers.routing import CHECK_CONSISTENCY


def _samples(cache: CacheService, **changes: object) -> Samples:
    """Every write sampled, windows of 1 and 10 s, at most 5 pending per window."""
    config = MonitorConfig(1.0, (1.0, 10.0), 5, 100, 20, "")
    return Samples(cache.keys, dataclasses.replace(config, **changes))  # type: ignore[arg-type]


def test_the_rate_and_the_cap_per_write_bound_what_is_sampled(cache: CacheService) -> None:
    redis = cache.clients.writer
    off = _samples(cache, rate=0.0)
    assert off.record(redis, "import", ((i, 1) for i in range(1, 100))) == 0
    assert not redis.exists(off.due_key(1.0), off.counts_key)  # not even a round trip's keys

    capped = _samples(cache, max_per_write=3, max_samples=100)
    assert capped.record(redis, "import", ((i, 1) for i in range(1, 100))) == 3
    assert redis.zcard(capped.due_key(1.0)) == redis.zcard(capped.due_key(10.0)) == 3


def test_the_kept_checks_are_bounded_and_the_dropped_counted(cache: CacheService) -> None:
    redis = cache.clients.writer
    samples = _samples(cache)  # at most 5 pending per window
    for member_id in range(1, 9):
        assert samples.record(redis, "update", [(member_id, 2)]) == 1
    assert redis.zcard(samples.due_key(1.0)) == 5
    figures = samples.read(redis)
    assert (figures["sampled"], figures["dropped"]) == (8, 6)  # 3 per window
    assert figures["windows"]["1"]["pending"] == 5


def test_a_due_check_is_claimed_once_and_counted(cache: CacheService) -> None:
    redis = cache.clients.writer
    samples = _samples(cache, max_samples=100)
    samples.record(redis, "create", [(7, 1), (8, 1), (9, 1)])
    now = samples.pick("create", [(1, 1)])[0].acked_at
    assert samples.claim(redis, 1.0, now, 10) == []  # not due yet
    first = samples.claim(redis, 1.0, now + 1.5, 2)  # the limit per run holds
    rest = samples.claim(redis, 1.0, now + 1.5, 10)
    assert len(first) == 2 and len(rest) == 1
    assert {s.member_id for s in first + rest} == {7, 8, 9}
    assert samples.claim(redis, 1.0, now + 1.5, 10) == []  # leased: not claimed twice
    samples.settle(redis, 1.0, first + rest)
    assert redis.zcard(samples.due_key(1.0)) == 0

    tally = Tally.empty()
    for sample in first + rest:
        tally.add("1", sample.member_id != 9, 0.2)
    tally.seconds = 0.01
    samples.count(redis, tally)
    window = samples.read(redis)["windows"]["1"]
    assert (window["checked"], window["consistent"], window["inconsistent"]) == (3, 2, 1)
    assert window["ratio"] == pytest.approx(2 / 3) and window["late_s_avg"] == 0.2


def test_nines() -> None:
    assert nines(999, 1000) == 3.0
    assert nines(999_999, 1_000_000) == 6.0
    assert nines(50, 50) == round(math.log10(50), 2)  # all agreed: what 50 samples can show
    assert nines(0, 0) is None


def test_windows_must_be_positive_and_increasing(settings: Settings) -> None:
    assert settings.consistency_windows == (1.0, 10.0, 60.0)
    for bad in ("10,1", "0,5", "1,x", ""):
        with pytest.raises(ConfigError, match="CONSISTENCY_WINDOWS_S"):
            load_settings(consistency_windows_s=bad, _env_file=None)


def test_a_claim_never_settled_falls_due_again_when_its_lease_ends(cache: CacheService) -> None:
    """A run that dies after its claim, or whose reply a failover loses, loses no check."""
    redis = cache.clients.writer
    samples = _samples(cache, max_samples=100)
    samples.record(redis, "update", [(7, 3), (8, 5)])
    due = samples.pick("update", [(1, 1)])[0].acked_at + 1.5
    claimed = samples.claim(redis, 1.0, due, 10)
    assert {s.member_id for s in claimed} == {7, 8}
    assert samples.claim(redis, 1.0, due + CLAIM_LEASE_S - 1, 10) == []  # still leased
    again = samples.claim(redis, 1.0, due + CLAIM_LEASE_S + 0.1, 10)
    assert sorted(again, key=lambda s: s.member_id) == sorted(claimed, key=lambda s: s.member_id)
    assert samples.read(redis)["windows"]["1"]["pending"] == 2  # leased ones still pending


def test_settling_takes_the_checked_off_and_puts_a_recheck_in_once(cache: CacheService) -> None:
    redis = cache.clients.writer
    samples = _samples(cache, max_samples=100)
    samples.record(redis, "update", [(7, 3), (8, 5)])
    due = samples.pick("update", [(1, 1)])[0].acked_at + 1.5
    seven, eight = sorted(samples.claim(redis, 1.0, due, 10), key=lambda s: s.member_id)
    recheck = dataclasses.replace(eight, seen=Seen(6, 1.0, due + 1.0))
    samples.settle(redis, 1.0, [seven, eight], [recheck])
    assert redis.zrange(samples.due_key(1.0), 0, -1, withscores=True) == [
        (recheck.encode().encode(), due + 1.0)
    ]


def test_a_lease_outlasts_every_run_of_the_monitor() -> None:
    """A run is killed at its task's hard time limit; its claims must still be leased then,
    or a live run's checks would be claimed again by the next."""
    assert CLAIM_LEASE_S > CHECK_CONSISTENCY.time_limit > RUN_BUDGET_S
