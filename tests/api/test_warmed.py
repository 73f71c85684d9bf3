"""The Celery warm-up's keys are the routes' entries: a warmed route answers without SQL.

Lookups are warmed by tasks.warming as it is. The aggregates are written here under the key
the warm-up must use, ``Keys.analytics("dashboard", gen)`` and
``Keys.statistics("demographics", gen)``, gen being the generation of the data type's tag read
before the query (a bump between the read and the write leaves the value under a retired key).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import Engine

from cache import CacheService, DataType, build_cache
from cache.invalidation import TAG_ANALYTICS, TAG_STATISTICS, generations
from config import Settings
from tasks.sources import LOOKUP_NAMES, SqlSource
from tasks.warming import WarmReport, warm_aggregates
from tests.api.conftest import Api
from tests.api.test_members import new_member

pytestmark = pytest.mark.anyio


@pytest.fixture
def warmer(api_settings: Settings) -> Iterator[CacheService]:
    """The sync front the Celery workers use, on the app's keyspace."""
    cache = build_cache(api_settings)
    yield cache
    cache.close()


async def test_lookups_warmed_by_the_warm_up_are_hits(
    api: Api, warmer: CacheService, engine: Engine
) -> None:
    source = SqlSource(engine)  # not closed: the engine is the session's
    warm_aggregates(warmer, source, DataType.LOOKUP, WarmReport(started=time.monotonic()))
    for name in LOOKUP_NAMES:
        answer = await api.client.get(f"/api/v1/lookups/{name}")
        assert (answer.status_code, answer.headers["x-cache"]) == (200, "HIT"), name
        assert answer.content == orjson.dumps(source.lookup(name))
    assert api.statements == [], "a warmed lookup runs no SQL"


@pytest.mark.parametrize(
    ("path", "data_type", "tag", "name"),
    [
        ("/api/v1/analytics/dashboard", DataType.ANALYTICS, TAG_ANALYTICS, "dashboard"),
        ("/api/v1/statistics/demographics", DataType.STATISTICS, TAG_STATISTICS, "demographics"),
    ],
)
async def test_aggregates_warmed_under_their_generation_are_hits_until_a_bump(
    api: Api,
    warmer: CacheService,
    engine: Engine,
    path: str,
    data_type: DataType,
    tag: str,
    name: str,
) -> None:
    source = SqlSource(engine)
    gens = await generations(api.cache, (tag,))
    assert gens is not None
    read = source.analytics if data_type is DataType.ANALYTICS else source.statistics
    value = read(name)
    assert warmer.set_many({warmer.keys.entry(data_type, name, *gens): value}, data_type)

    warmed = await api.client.get(path)
    assert (warmed.status_code, warmed.headers["x-cache"]) == (200, "HIT")
    assert warmed.content == orjson.dumps(value)
    assert api.statements == [], "a warmed aggregate runs no SQL"

    # A member write bumps the tag: the warmed value is retired, the route loads afresh.
    assert (await api.client.post("/api/v1/members", json=new_member())).status_code == 201
    after = await api.client.get(path)
    assert after.headers["x-cache"] == "MISS"
    assert after.content != warmed.content
    again = await api.client.get(path)
    assert (again.headers["x-cache"], again.headers["etag"]) == ("HIT", after.headers["etag"])
