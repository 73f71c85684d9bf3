"""The consistency monitor end to end: writes through a real API process are sampled, the
check task runs on a real worker, and its figures reach the API's Prometheus text.

Windows are shortened to 0.5 s and 2 s; every write is sampled. A write through the API is
consistent in both windows; a write to PostgreSQL behind the cache's back (no invalidation)
after a sampled one is reported inconsistent for that member's key, with the cached and the
database versions. A later change whose writer tells the cache after the check first looks
(a change still on its way) is checked again a window later and found consistent.
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
from sqlalchemy.orm import Session

from api_stub.management import hash_token
from cache import DataType
from cache.codec import Header
from cache.consistency import Sample
from cache.keys import Keys
from cache.kinds import Change
from db import queries
from tasks.monitor import later_change, reflects_write
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


def _behind_the_caches_back(pg_engine: Engine, member_id: int, tier: str) -> None:
    """Commit a change of the member and tell the cache nothing."""
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE members SET tier = :tier, version = version + 1, "
                "updated_at = now() WHERE id = :id"
            ),
            {"tier": tier, "id": member_id},
        )


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
    _behind_the_caches_back(pg_engine, 12, "platinum")  # the cache keeps `version`

    results = _checks_until_done(worker, 12)

    found = [i for r in results for i in r["inconsistencies"]]
    record = Keys(task_env["REDIS_KEY_PREFIX"]).member(12)
    for window in WINDOWS:
        at_window = {(i["tier"], i["key"]): i for i in found if i["window"] == window}
        assert at_window[("redis", record)]["cached"] == version
        assert at_window[("redis", record)]["database"] == version + 1
        # The sampled write is in the copy; the change after it never came.
        assert at_window[("redis", record)]["missing"] == "change"
        assert at_window[("redis", record)]["written"] == version
        probed = at_window[("api", "/api/v1/members/12")]  # what a reader of the API gets
        assert (probed["cached"], probed["database"]) == (version, version + 1)
        # The dashboard was computed before the write it never saw.
        assert any(tier == "redis" and ":dashboard:" in key for tier, key in at_window)
    figures = _figures(api)
    for window in WINDOWS:
        assert figures["windows"][window]["consistent"] == 0
        assert figures["windows"][window]["inconsistent"] == 1
    assert {i["key"] for i in figures["recent_inconsistencies"]} >= {record}


def test_a_later_change_still_on_its_way_is_checked_again_not_reported(
    worker: InProcess, api: httpx.Client, pg_engine: Engine, task_env: dict[str, str]
) -> None:
    """The replay's false alarms: under load a write is committed seconds before its writer
    tells the cache; an older sample checked meanwhile saw the copy one version behind."""
    version = _patch(api, 13, "gold")  # sampled, written through
    _behind_the_caches_back(pg_engine, 13, "bronze")  # committed; its writer is slow

    first: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not any(r["rechecks"] for r in first):  # the 0.5-s check saw it behind
        assert time.monotonic() < deadline, first
        outcome = worker.run(routing.CHECK_CONSISTENCY)
        assert outcome.state == "SUCCESS", outcome.error
        first.append(outcome.result)
        time.sleep(0.05)
    assert not any(r["inconsistencies"] for r in first), first

    # The slow writer now tells the cache, as the API's write path does after its commit.
    with Session(pg_engine) as session:
        row = queries.get_member(session, 13)
    assert row is not None and row["version"] == version + 1
    worker.cache.write_through(
        Keys(task_env["REDIS_KEY_PREFIX"]).member(13), row, row["version"], DataType.MEMBER
    )

    results = first + _checks_until_done(worker, 13)

    assert all(not r["inconsistencies"] for r in results), results
    figures = _figures(api)
    assert figures["rechecks"] >= 1
    for window in WINDOWS:
        assert figures["windows"][window]["checked"] == 1
        assert figures["windows"][window]["consistent"] == 1


def test_what_a_copy_must_show() -> None:
    """The pure decisions: a copy must have the sampled write; a newer row is a later
    change (a bulk change acknowledged no version: any row may be)."""
    update = Sample(7, 3, 0.0, Change.UPDATE.value, "n")
    delete = Sample(7, 5, 0.0, Change.DELETE.value, "n")
    bulk = Sample(7, None, 0.0, Change.BULK_UPDATE.value, "n")
    assert reflects_write(None, update)
    assert reflects_write(Header(0.0, 3, False), update)
    assert not reflects_write(Header(0.0, 2, False), update)
    assert not reflects_write(Header(0.0, 3, True), update)  # an older delete's absence
    assert reflects_write(Header(0.0, 4, True), update)  # deleted since
    assert reflects_write(Header(0.0, 5, True), delete)
    assert not reflects_write(Header(0.0, 4, False), delete)
    assert reflects_write(Header(0.0, 1, False), bulk)
    assert later_change(update, {"version": 4}) and not later_change(update, {"version": 3})
    assert later_change(update, None) and not later_change(delete, None)
    assert later_change(bulk, {"version": 1})
