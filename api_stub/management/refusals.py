"""Bursts of refused tokens on the management API, counted cluster-wide, raised once each.

The guard (api_stub/management/guard.py) reports every refusal of a presented token: a 401
for a token that is unknown (counted per client address) and a 403 for a known token whose
role is below the route's (counted per token label). A missing token is not counted: a
browser or a probe without credentials is not someone guessing tokens.

Counting is one round trip on the durable role, in one MULTI: ``SET <key> 0 NX EX window``
then ``INCR <key>``, key ``<prefix>sys:mgmt:refused:<address|token>:<who>``. The window
starts at the first refusal of a burst; the refusal that brings the count to
MANAGEMENT_REFUSAL_THRESHOLD raises one security alert (workers/alerts.py), later ones in the
same window raise nothing, and the key expiring ends the burst. Every API process counts in
the same key, so a burst spread over several processes is one burst.

Behind a reverse proxy the client address is the proxy's unless uvicorn is told to trust
its forwarded headers (``--forwarded-allow-ips``).

Nothing here can fail or slow a request: Redis unavailable (or the breaker open) counts
nothing; the alert is enqueued on a worker thread of the event loop's executor, so a broker
outage delays only the alert (the sender dead-letters what the broker does not take).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Final, Literal

from cache import AsyncCacheService
from cache.client import AsyncRedis
from cache.flow import UNAVAILABLE
from workers.alerts import AlertSender

log = logging.getLogger("api_stub.management.refusals")

Subject = Literal["address", "token"]
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.\-]")  # an IPv6 address's colons, anything odd


class RefusalWatch:
    def __init__(
        self,
        cache: AsyncCacheService,
        client: AsyncRedis,
        sender: Callable[[], AlertSender],
        threshold: int,
        window_s: int,
    ) -> None:
        self.cache = cache  # its keys and its breaker (``run``)
        self.client = client
        self._sender = sender  # built on first burst (the task client is the process's)
        self.threshold = threshold
        self.window_s = window_s
        self._pending: set[asyncio.Future[Any]] = set()

    def key(self, subject: Subject, who: str) -> str:
        return self.cache.keys.system("mgmt", "refused", subject, _UNSAFE.sub("_", who)[:100])

    async def count(self, subject: Subject, who: str) -> int | None:
        """Count one refusal of ``who``; the burst's count so far, None if Redis did not
        answer."""
        key = self.key(subject, who)
        pipe: Any = self.client.pipeline(transaction=True)
        pipe.set(key, 0, nx=True, ex=self.window_s)
        pipe.incr(key)
        replies = await self.cache.run(pipe.execute)
        if replies is UNAVAILABLE:
            return None
        return int(replies[-1])

    async def refused(self, subject: Subject, who: str, status: int, path: str) -> bool:
        """Record one refusal; True when it completed a burst (its alert is on its way).
        Never raises."""
        try:
            count = await self.count(subject, who)
        except Exception:
            log.exception("refusal of %s %s not counted", subject, who)
            return False
        if count != self.threshold:
            return False
        details = {
            "subject": subject,
            "client": who,
            "refusals": count,
            "window_s": self.window_s,
            "status": status,
            "path": path,
        }
        summary = (
            f"{count} refused management API calls within {self.window_s}s from {subject} {who}"
        )
        self._in_background(lambda: self._sender().alert("security", "warning", summary, details))
        return True

    def _in_background(self, call: Callable[[], object]) -> None:
        future = asyncio.get_running_loop().run_in_executor(None, call)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the alerts being enqueued (tests; an orderly shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
