"""TTL policy per data type: soft expiry with jitter, and a longer hard Redis TTL.

The soft TTL is when a value becomes stale; the hard TTL is when Redis drops it. Between the
two a stale value can still be served while one caller refreshes it, so an expiry never sends
every reader to the database at once. Jitter spreads keys warmed together over +-10% (default)
of their TTL so they do not all expire in the same second.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from cache.types import TTL_SETTING, DataType


class _TtlSettings(Protocol):
    # plus the TTL of each data type, named in cache.types.TTL_SETTING
    cache_ttl_jitter: float
    cache_stale_ratio: float
    cache_negative_ttl: int


@dataclass(frozen=True, slots=True)
class Expiry:
    soft_seconds: float  # value is fresh until created_at + soft_seconds
    hard_ms: int  # Redis PX: the key disappears after this


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    base: dict[DataType, int]
    jitter: float = 0.10
    stale_ratio: float = 0.5
    negative_ttl: int = 30

    @classmethod
    def from_settings(cls, settings: _TtlSettings) -> TtlPolicy:
        return cls(
            base={
                data_type: int(getattr(settings, field)) for data_type, field in TTL_SETTING.items()
            },
            jitter=settings.cache_ttl_jitter,
            stale_ratio=settings.cache_stale_ratio,
            negative_ttl=settings.cache_negative_ttl,
        )

    def ttl(self, data_type: DataType) -> int:
        return self.base.get(data_type, self.base[DataType.DEFAULT])

    def expiry(
        self, data_type: DataType, ttl: float | None = None, rand: random.Random | None = None
    ) -> Expiry:
        """Soft and hard expiry for a new value; ttl overrides the data type's base."""
        base = float(ttl if ttl is not None else self.ttl(data_type))
        return jittered(base, self.jitter, self.stale_ratio, rand)

    def expiries(
        self, data_type: DataType, count: int, rand: random.Random | None = None
    ) -> list[tuple[float, int]]:
        """:meth:`expiry` for ``count`` new values at once, each with its own draw, as
        (soft seconds, hard ms) pairs: bulk writes build thousands, and an Expiry each costs
        more than the draw."""
        base, jitter, ratio = float(self.ttl(data_type)), self.jitter, self.stale_ratio
        if not jitter:
            return [_soft_hard(base, 0.0, ratio)] * count
        draw = (rand or random).random  # uniform(-jitter, jitter), spelled out: no call each
        return [_soft_hard(base, -jitter + 2 * jitter * draw(), ratio) for _ in range(count)]

    def negative(self) -> Expiry:
        return Expiry(float(self.negative_ttl), self.negative_ttl * 1000)

    def stale_window(self, data_type: DataType) -> int:
        """Seconds a stale value may still be served (Cache-Control stale-while-revalidate)."""
        return int(self.ttl(data_type) * self.stale_ratio)


def jittered(
    base: float, jitter: float, stale_ratio: float, rand: random.Random | None = None
) -> Expiry:
    """Soft TTL within base*(1 +- jitter); the hard TTL adds the stale window on top."""
    draw = (rand or random).uniform(-jitter, jitter) if jitter else 0.0
    return Expiry(*_soft_hard(base, draw, stale_ratio))


def _soft_hard(base: float, draw: float, stale_ratio: float) -> tuple[float, int]:
    soft = max(base * (1.0 + draw), 0.001)
    hard_ms = max(math.ceil(soft * (1.0 + stale_ratio) * 1000), math.ceil(soft * 1000) + 1)
    return soft, hard_ms


def should_refresh_early(
    now: float, soft_expires_at: float, compute_time: float, beta: float, rand: float
) -> bool:
    """XFetch (Vattani et al., VLDB 2015): recompute when now - delta*beta*ln(rand) >= expiry.

    ``rand`` is uniform in (0, 1]; slow computations (large delta) refresh earlier, and the
    chance of an early refresh grows as expiry approaches, so one caller usually refreshes
    before anyone sees a miss.
    """
    if beta <= 0 or compute_time <= 0:
        return now >= soft_expires_at
    return now - compute_time * beta * math.log(max(rand, 1e-300)) >= soft_expires_at
