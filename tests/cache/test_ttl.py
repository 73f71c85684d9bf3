from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from cache.ttl import TtlPolicy, jittered, should_refresh_early
from cache.types import DataType
from config import load_settings


@given(
    base=st.floats(1, 10**6),
    jitter=st.floats(0, 0.5),
    stale=st.floats(0, 3),
    seed=st.integers(0, 2**32),
)
def test_jitter_stays_within_bounds_and_hard_outlives_soft(
    base: float, jitter: float, stale: float, seed: int
) -> None:
    expiry = jittered(base, jitter, stale, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= expiry.soft_seconds <= base * (1 + jitter) + 1e-9
    assert expiry.hard_ms > expiry.soft_seconds * 1000
    assert expiry.hard_ms >= math.floor(expiry.soft_seconds * (1 + stale) * 1000)


def test_jitter_spreads_keys_warmed_together() -> None:
    policy = TtlPolicy.from_settings(load_settings(_env_file=None))
    softs = [policy.expiry(DataType.MEMBER).soft_seconds for _ in range(2000)]
    assert min(softs) >= 810 and max(softs) <= 990
    assert max(softs) - min(softs) > 150  # actually spread, not a constant
    assert len({round(s) for s in softs}) > 100


@given(jitter=st.sampled_from([0.0, 0.1, 0.5]), seed=st.integers(0, 2**32))
def test_expiries_draw_exactly_as_expiry_does(jitter: float, seed: int) -> None:
    policy = TtlPolicy(base={DataType.DEFAULT: 1800, DataType.MEMBER: 900}, jitter=jitter)
    one_by_one, rand = [], random.Random(seed)
    for _ in range(50):
        expiry = policy.expiry(DataType.MEMBER, rand=rand)
        one_by_one.append((expiry.soft_seconds, expiry.hard_ms))
    assert policy.expiries(DataType.MEMBER, 50, random.Random(seed)) == one_by_one


def test_policy_per_data_type() -> None:
    policy = TtlPolicy.from_settings(load_settings(_env_file=None))
    assert {dt: policy.ttl(dt) for dt in DataType} == {
        DataType.ANALYTICS: 3600,
        DataType.STATISTICS: 1800,
        DataType.MEMBER: 900,
        DataType.LOOKUP: 86400,
        DataType.DEFAULT: 1800,
    }
    assert policy.negative().soft_seconds == 30
    assert policy.stale_window(DataType.MEMBER) == 450


def test_xfetch_decision() -> None:
    expiry = 1000.0
    # Far from expiry with a fast computation: never refresh, whatever the draw.
    assert not should_refresh_early(900.0, expiry, 0.01, 1.0, 1e-6)
    # Past expiry: always.
    assert should_refresh_early(1000.0, expiry, 0.01, 1.0, 0.999)
    # delta * beta * -ln(rand) crosses the remaining time: 10 s left, delta 5, -ln(0.1)=2.3.
    assert should_refresh_early(990.0, expiry, 5.0, 1.0, 0.1)
    assert not should_refresh_early(990.0, expiry, 5.0, 1.0, 0.5)
    # beta scales eagerness; beta 0 means "only at expiry".
    assert should_refresh_early(990.0, expiry, 5.0, 2.0, 0.3)
    assert not should_refresh_early(999.0, expiry, 5.0, 0.0, 1e-9)


def test_xfetch_probability_grows_towards_expiry() -> None:
    rng = random.Random(7)

    def rate(remaining: float) -> float:
        draws = [1 - rng.random() for _ in range(20_000)]
        return sum(should_refresh_early(100 - remaining, 100, 1.0, 1.0, r) for r in draws) / 2e4

    near, mid, far = rate(0.5), rate(2.0), rate(6.0)
    assert near > mid > far
    assert abs(near - math.exp(-0.5)) < 0.02  # P = exp(-remaining/delta)
