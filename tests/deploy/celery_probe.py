"""A Celery app with the platform's configuration (celeryconfig.from_settings) and one task.

The ACL test runs ``celery -A tests.deploy.celery_probe worker`` as the ``worker`` Redis user
against a redis-server started from the rendered configs, to show that the user's key and
channel patterns cover everything Celery touches: queues, unacked sets, bindings, results,
remote control (pidbox) and events.
"""

from __future__ import annotations

from celery import Celery

import celeryconfig
from cache import build_cache
from config import load_settings

settings = load_settings()
app = Celery("acl_probe", set_as_current=False)
app.conf.update(celeryconfig.from_settings(settings))
app.conf.beat_schedule = {}


@app.task(name="acl_probe.touch_cache")
def touch_cache(member_id: int) -> bool:
    """Write one member through the cache core, as a warm-up task would."""
    cache = build_cache(settings)
    try:
        return cache.set(cache.keys.member(member_id), {"id": member_id})
    finally:
        cache.close()
