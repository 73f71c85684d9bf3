"""The consistency monitor end to end: writes through a real API process are sampled, the
check task runs on a real worker, and its figures reach the API's Prometheus text.

Windows are shortened to 0.5 s and 2 s; every write is sampled. A write through the API is
consistent in both windows; a write to PostgreSQL behind the cache's back (no invalidation)
after a sampled one is reported inconsistent for that member's key, with the cached and the
database versions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from api_stub.management import hash_token
from cache.keys import Keys
from tests.support.api_process import ApiProcess
from tests.support.redis_procs import RedisProcess
from tests.workers import services
from tests.workers.conftest import InProcess
from workers import routing

WINDOWS = ("0.5", "2")
VIEWER = "viewer-" + uuid.uuid4().hex


@pytest.fixture
def api_proc(tmp_path: Path) -> ApiProcess:
    """Not started yet: its address goes into the settings first (the monitor's probe)."""
    return ApiProcess(env={}, directory=tmp_path / "api")


@pytest.fixture
def task_env(api_proc: ApiProcess, task_redis: RedisProcess, pg_database: str) -> dict[str, str]:
    prefix = f"test-consistency-{uuid.uuid4().hex[:8]}:"
    return services.stack_env(
        prefix,
        task_redis.port,
        pg_database,
        CONSISTENCY_SAMPLE_RATE="1",
        CONSISTENCY_WINDOWS_S=",".join(WINDOWS),
        CONSISTENCY_PROBE_URL=api_proc.base_url,
        MANAGEMENT_TOKENS=f"viewer:{hash_token(VIEWER)}:viewer-test",
    )


@pytest.fixture
def api(api_proc: ApiProcess, task_env: dict[str, str]) -> Iterator[httpx.Client]:
    api_proc.env = task_env
    api_proc.start()
    try:
        with httpx.Client(base_url=api_proc.base_url, timeout=10) as client:
            yield client
    finally:
        api_proc.stop()


def _checks_until_done(worker: InProcess, member_id: int, deadline_s: float = 20.0) -> list[Any]:
    """Run the check task on the worker until member_id was checked in every window; the
    runs' results."""
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        outcome = worker.run(routing.CHECK_CONSISTENCY)
        assert outcome.state == "SUCCESS", outcome.error
        results.append(outcome.result)
        seen |= {w for w, n in outcome.result["checked"].items() if n}
        if seen >= set(WINDOWS):
            return results
        time.sleep(0.1)
    raise AssertionError(f"member {member_id} not checked in every window: {results}")


def _patch(api: httpx.Client, member_id: int, tier: str) -> int:
    answer = api.patch(f"/api/v1/members/{member_id}", json={"tier": tier})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["version"])


def _figures(api: httpx.Client) -> dict[str, Any]:
    answer = api.get("/api/v1/cache/metrics", headers={"Authorization": f"Bearer {VIEWER}"})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["consistency"]
    return found


def test_a_write_through_the_api_is_consistent(worker: InProcess, api: httpx.Client) -> None:
    assert api.get("/api/v1/analytics/dashboard").status_code == 200
    version = _patch(api, 11, "gold")
    assert api.get("/api/v1/members/11").json()["version"] == version  # cached, near and redis
    assert api.get("/api/v1/analytics/dashboard").status_code == 200  # refilled after the bump

    results = _checks_until_done(worker, 11)

    assert all(not r["inconsistencies"] for r in results), results
    figures = _figures(api)
    assert figures["sampled"] == 1
    for window in WINDOWS:
        assert figures["windows"][window]["checked"] == 1
        assert figures["windows"][window]["consistent"] == 1
        assert figures["windows"][window]["all_consistent"] is True
    assert figures["checks"] == 2 and figures["check_seconds"] > 0
    # One query per batch: the two windows' checks, one batch each unless a late run took both.
    assert figures["db_reads"] in (1, 2)

    prometheus = api.get(
        "/api/v1/cache/prometheus", headers={"Authorization": f"Bearer {VIEWER}"}
    ).text
    assert 'membership_cache_consistency_ratio{window="0.5"} 1.0' in prometheus
    assert 'membership_cache_consistency_checked_total{window="2"} 1.0' in prometheus
    assert "membership_cache_consistency_check_seconds_total" in prometheus
    assert f"membership_cache_consistency_db_reads_total {figures['db_reads']:.1f}" in prometheus


def test_a_write_behind_the_caches_back_is_inconsistent(
    worker: InProcess, api: httpx.Client, pg_engine: Engine, task_env: dict[str, str]
) -> None:
    version = _patch(api, 12, "silver")  # sampled; written through at `version`
    assert api.get("/api/v1/analytics/dashboard").status_code == 200  # computed after it
    with pg_engine.begin() as conn:  # no invalidation: the cache keeps `version`
        conn.execute(
            text(
                "UPDATE members SET tier = 'platinum', version = version + 1, "
                "updated_at = now() WHERE id = 12"
            )
        )

    results = _checks_until_done(worker, 12)

    found = [i for r in results for i in r["inconsistencies"]]
    record = Keys(task_env["REDIS_KEY_PREFIX"]).member(12)
    for window in WINDOWS:
        at_window = {(i["tier"], i["key"]): i for i in found if i["window"] == window}
        assert at_window[("redis", record)]["cached"] == version
        assert at_window[("redis", record)]["database"] == version + 1
        probed = at_window[("api", "/api/v1/members/12")]  # what a reader of the API gets
        assert (probed["cached"], probed["database"]) == (version, version + 1)
        # The dashboard was computed before the write it never saw.
        assert any(tier == "redis" and ":dashboard:" in key for tier, key in at_window)
    figures = _figures(api)
    for window in WINDOWS:
        assert figures["windows"][window]["consistent"] == 0
        assert figures["windows"][window]["inconsistent"] == 1
    assert {i["key"] for i in figures["recent_inconsistencies"]} >= {record}
