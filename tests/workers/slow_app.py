"""A worker app whose warm-ups and invalidations take seconds: a test can kill it mid-task.

``celery -A tests.workers.slow_app worker``. Member pages are five members each, each read
after SLOW_SECONDS (environment); an invalidation sleeps SLOW_INVALIDATION_SECONDS before
deleting. Everything else is the platform's app.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from cache import CacheService
from cache.kinds import Change
from config import load_settings
from services import Services
from tasks import invalidation
from tasks.lifetimes import Lifetimes
from tasks.runtime import SOURCE
from tasks.sources import MemberRow, SqlSource
from workers.factory import create_app

DELAY = float(os.environ.get("SLOW_SECONDS", "0.5"))
INVALIDATION_DELAY = float(os.environ.get("SLOW_INVALIDATION_SECONDS", "0.5"))


class SlowSource(SqlSource):
    @classmethod
    def build(cls, services: Services) -> SlowSource:
        return cls(services.engine)

    def member_pages(
        self, size: int, *, after: int = 0, upto: int | None = None
    ) -> Iterator[list[MemberRow]]:
        for page in super().member_pages(5, after=after, upto=upto):
            time.sleep(DELAY)
            yield page


_invalidate = invalidation.invalidate


def slow_invalidate(
    cache: CacheService,
    change: Change,
    member_ids: Iterable[int] = (),
    lifetimes: Lifetimes | None = None,
) -> Any:
    time.sleep(INVALIDATION_DELAY)
    return _invalidate(cache, change, member_ids, lifetimes)


invalidation.invalidate = slow_invalidate  # the task body looks the name up when it runs
app = create_app(load_settings(), parts={SOURCE: SlowSource.build})
