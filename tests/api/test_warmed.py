"""The warm-up's keys are the routes' entries: a warmed route answers without SQL.

The warm-up (tasks.warming, the code the Celery task runs) and the API build every key with
the same ``Kind.key``, generations included, so after any member change a warm-up fills
exactly what the next GET reads. tests/management/test_with_worker.py shows the same through
a real worker and the management API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from api_stub import routes
from api_stub.rules import rule_of
from cache import CacheService, build_cache
from cache.kinds import Kind, Warm
from config import Settings
from tasks.sources import SqlSource
from tasks.warming import warm_critical
from tests.api.conftest import CURRENT, Api
from tests.api.test_members import new_member

pytestmark = pytest.mark.anyio


@pytest.fixture
def warmer(api_settings: Settings) -> Iterator[CacheService]:
    """The sync front the Celery workers use, on the app's keyspace."""
    cache = build_cache(api_settings)
    yield cache
    cache.close()


def warmed_routes() -> list[tuple[str, Kind, tuple[object, ...]]]:
    """(path, kind, variant) of every cached route whose kind the critical warm-up fills."""
    found = []
    for route in routes.router.routes:
        rule = rule_of(route)
        if rule is None or rule.kind.warm is not Warm.CRITICAL:
            continue
        for params in rule.kind.variants:
            path = str(getattr(route, "path", ""))
            for name, value in zip(rule.kind.params, params, strict=True):
                path = path.replace("{" + name + "}", str(value))
            found.append((path, rule.kind, params))
    return found


def _timeless(value: Any) -> Any:
    """An aggregate without the moment it was generated at."""
    return (
        {k: v for k, v in value.items() if k != "generated_at"}
        if isinstance(value, dict)
        else value
    )


async def test_after_a_member_change_the_warm_up_fills_what_every_route_reads(
    api: Api, warmer: CacheService, engine: Engine
) -> None:
    warmed = warmed_routes()
    assert {kind.name for _, kind, _ in warmed} == {"dashboard", "growth", "demographics", "lookup"}
    # A member change moves the aggregates to a new generation.
    assert (await api.client.post("/api/v1/members", json=new_member())).status_code == 201
    source = SqlSource(engine)  # not closed: the engine is the session's
    warm_critical(warmer, source, hottest=0)
    api.statements.clear()
    for path, kind, params in warmed:
        answer = await api.client.get(path)
        assert (answer.status_code, answer.headers["x-cache"]) == (200, "HIT"), path
        assert _timeless(answer.json()) == _timeless(source.load(kind, params)), path
    assert api.statements == [], "a warmed route runs no SQL"


async def test_a_member_write_retires_what_the_warm_up_wrote(
    api: Api, warmer: CacheService, engine: Engine
) -> None:
    warm_critical(warmer, SqlSource(engine), hottest=0)
    path = "/api/v1/analytics/growth"
    warmed = await api.client.get(path)
    assert (warmed.status_code, warmed.headers["x-cache"]) == (200, "HIT")

    # A member write bumps the tag: the warmed value is retired. Within the kind's lag it may
    # still be served, marked STALE; a reader asking for the current value loads afresh.
    assert (await api.client.post("/api/v1/members", json=new_member())).status_code == 201
    lagging = await api.client.get(path)
    assert (lagging.headers["x-cache"], lagging.content) == ("STALE", warmed.content)
    after = await api.client.get(path, headers=CURRENT)
    assert after.headers["x-cache"] == "MISS"
    assert after.content != warmed.content  # the new member joined this month
    again = await api.client.get(path)
    assert (again.headers["x-cache"], again.headers["etag"]) == ("HIT", after.headers["etag"])
