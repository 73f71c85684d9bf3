"""A fixed-window rate limit per token, counted in Redis so every API process shares it.

One pipelined round trip a request: INCR of ``<prefix>sys:mgmt:rate:<token id>:<window no>``
and a PEXPIRE that lets the counter outlive its window a little. A fixed window lets a token
make up to twice the limit across a window boundary; for a handful of operators that is
precise enough, and it needs no script.

Fail-open: when Redis is unavailable (or the breaker is open) the request is let through.
The management API must keep working when Redis is the thing being repaired.

The counters are platform state: they go to the durable role's client the process's services
hand out (``services.async_redis("durable")``), through the cache front's breaker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cache import AsyncCacheService
from cache.client import AsyncRedis
from cache.flow import UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    count: int | None  # requests of the token in this window; None when Redis did not answer
    limit: int
    retry_after_s: int  # seconds until the window ends


class RateLimiter:
    def __init__(
        self,
        cache: AsyncCacheService,
        client: AsyncRedis,
        limit: int,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache  # its keys, and its breaker (``run``)
        self.client = client
        self.limit = limit
        self.window_s = window_s
        self._clock = clock

    async def hit(self, token_id: str) -> Verdict:
        """Count one request of ``token_id``; allowed while the window's count <= limit."""
        now = self._clock()
        window = int(now // self.window_s)
        retry_after = max(1, math.ceil((window + 1) * self.window_s - now))
        key = self.cache.keys.system("mgmt", "rate", token_id, window)
        pipe: Any = self.client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.pexpire(key, (self.window_s + 1) * 1000)
        replies = await self.cache.run(pipe.execute)
        if replies is UNAVAILABLE:
            return Verdict(True, None, self.limit, retry_after)
        count = int(replies[0])
        return Verdict(count <= self.limit, count, self.limit, retry_after)
