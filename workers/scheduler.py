"""Exactly one effective beat: a scheduler that sends only while it holds a leader lease.

Run two ``celery beat`` processes (one per host, say) and only the holder of
``<prefix>sys:beat:leader`` sends anything; the other ticks idle and takes over when the
lease lapses (its holder died or lost Redis), within ``lease_seconds``. The lease is a
``SET NX PX`` with a random token, renewed on every tick by compare-and-set, released on a
clean shutdown so the standby does not wait out the lease.

Two layers, on purpose: the lease keeps a second beat from sending at all, and each job's
period guard (workers/periods.py) makes a tick that slips through anyway (a leader paused
past its lease, a takeover that sends the entries missed meanwhile) a no-op. Celery's
PersistentScheduler does the scheduling; only ``tick`` is gated.

Configuration (``app.conf``): ``beat_leader_lease`` seconds (celeryconfig.BEAT_LEADER_LEASE
for an app celeryconfig did not configure); the beat's ``beat_max_loop_interval`` must stay
well below it so renewals come in time.

The scheduler opens the beat process's services (services.Services) when it sets up its
schedule and closes them with itself; the lease is on their durable Redis role.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Final

from celery.beat import PersistentScheduler
from redis.exceptions import RedisError

import celeryconfig
from services import Services
from workers.runtime import CacheCelery

log = logging.getLogger("workers.scheduler")

LEASE_SECONDS: Final = celeryconfig.BEAT_LEADER_LEASE  # defined once, with its reason
RENEW_EVERY: Final = 1.0  # seconds between renewals while ticking fast (a burst of sends)

# Extend only a lease we still hold; a leader that lost it must not steal it back by renewal.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLease:
    """A renewable lease on one key; ``hold()`` takes or keeps it, True while we lead."""

    def __init__(
        self, client: Any, key: str, seconds: float, token: str | None = None, *, held: bool = False
    ) -> None:
        self.client = client
        self.key = key
        self.seconds = seconds
        self.token = token or uuid.uuid4().hex
        # ``held``: another process took it under this token; hold() renews, never takes it.
        self.leading = held
        self._checked = 0.0
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        now = time.monotonic()
        if self.leading and now - self._checked < RENEW_EVERY:
            return True
        ms = int(self.seconds * 1000)
        try:
            # Renewal also when not leading: a leader cut off by a connection error (a
            # failover) still holds its token in the key and takes it back at once, rather
            # than standing by until its own lease lapses.
            leading = bool(self._renew(keys=[self.key], args=[self.token, ms]))
            if not leading and not self.leading:
                leading = bool(self.client.set(self.key, self.token, nx=True, px=ms))
        except RedisError as exc:
            # Without Redis nobody can know who leads: stop sending; the period guards
            # would refuse the runs anyway.
            log.warning("beat leader lease unavailable: %s", exc)
            leading = False
        if leading != self.leading:
            log.warning("beat %s leadership (%s)", "took" if leading else "lost", self.token)
        self.leading, self._checked = leading, now
        return leading

    def release(self) -> None:
        if self.leading:
            try:
                self._release(keys=[self.key], args=[self.token])
            except RedisError as exc:
                log.warning("beat leader lease not released (it will lapse): %s", exc)
        self.leading = False


class LeaderScheduler(PersistentScheduler):
    """PersistentScheduler that sends only while it holds the leader lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lease: LeaderLease | None = None
        self.services: Services | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        super().setup_schedule()
        app = self.app
        if not isinstance(app, CacheCelery):
            raise TypeError(f"{type(self).__name__} needs an app from workers.factory")
        seconds = float(app.conf.get("beat_leader_lease") or LEASE_SECONDS)
        self.services = services = Services.open(app.settings)
        self.lease = LeaderLease(
            services.redis("durable"), services.keys.system("beat", "leader"), seconds
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        assert self.lease is not None
        standby = min(self.lease.seconds / 3, float(self.max_interval or LEASE_SECONDS))
        if not self.lease.hold():
            return standby
        return float(min(super().tick(*args, **kwargs), standby))

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.lease is not None:
                self.lease.release()
            if self.services is not None:
                self.services.close()
