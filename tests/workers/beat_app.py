"""A beat app whose schedule ticks every TEST_BEAT_EVERY seconds with a TEST_BEAT_LEASE lease.

``celery -A tests.workers.beat_app beat``: the platform's app and scheduler (the leader
lease of workers/scheduler.py), with the crontabs replaced by a short interval so a test
sees many ticks of every job within seconds.
"""

from __future__ import annotations

import os

from config import load_settings
from workers.beat import schedule
from workers.factory import create_app

app = create_app(load_settings())
app.conf.beat_schedule = schedule(every=float(os.environ["TEST_BEAT_EVERY"]))
app.conf.beat_leader_lease = float(os.environ["TEST_BEAT_LEASE"])
app.conf.beat_max_loop_interval = 0.5
