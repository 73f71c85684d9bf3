"""The maintenance cadence on a real worker: each job once per period, whoever sends it, and
its report stored in PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from db import make_engine, reports, session_factory
from tests.workers import harness
from workers import routing
from workers.beat import schedule
from workers.periods import PeriodGuard

pytestmark = pytest.mark.slow

MAINTENANCE = [spec for spec in routing.SCHEDULED if spec.queue == routing.Q_MAINTENANCE]
PERIODS = {
    "daily": "2099-03-04",
    "weekly": "2099-W10",
    "monthly": "2099-03",
    "quarterly": "2099-Q1",
}


@pytest.mark.parametrize("spec", MAINTENANCE, ids=lambda spec: spec.guarded_job)
def test_same_job_same_period_runs_once(clean_stack: harness.Stack, spec: routing.TaskSpec) -> None:
    """Three sends of one job for one period, as from duplicated beat ticks, in flight
    together on a worker with two processes: exactly one runs the body."""
    stack = clean_stack
    period = PERIODS[spec.guarded_cadence]
    sent = [
        stack.client.app.send_task(spec.name, args=[period], queue=spec.queue) for _ in range(3)
    ]
    outcomes = [stack.wait(result.id) for result in sent]
    assert all(outcome.state == "SUCCESS" for outcome in outcomes), outcomes
    ran = [outcome.result for outcome in outcomes if outcome.result["ran"]]
    assert len(ran) == 1
    assert {outcome.result["period"] for outcome in outcomes} == {period}
    # The period's record names the run that did the work.
    guard = PeriodGuard(stack.cache.clients.writer, stack.cache.keys)
    job = spec.guarded_job
    record = guard.record(job, period)
    assert record is not None and record["state"] == "done"
    winner = next(r for r, o in zip(sent, outcomes, strict=True) if o.result["ran"])
    assert record["token"] == winner.id
    # ... and one report row, the one the run stored.
    with _session(stack) as session:
        stored = [r for r in reports.list_reports(session, job) if r["period"] == period]
    assert [r["id"] for r in stored] == [ran[0]["result"]["report_id"]]
    assert stored[0]["status"] == ran[0]["result"]["status"]
    # The next period is another run.
    nxt = stack.wait(
        stack.client.app.send_task(spec.name, args=[period[:-1] + "2"], queue=spec.queue).id
    )
    assert nxt.result["ran"] is True


def test_beat_tick_without_a_period_uses_the_current_one(clean_stack: harness.Stack) -> None:
    """What beat sends (the entry as configured, no arguments) runs for the current period,
    and a second identical tick is a no-op."""
    stack = clean_stack
    entry = schedule()["daily-report"]
    first = stack.wait(stack.client.app.send_task(entry["task"], **entry["options"]).id)
    second = stack.wait(stack.client.app.send_task(entry["task"], **entry["options"]).id)
    assert (first.result["ran"], second.result["ran"]) == (True, False)
    assert first.result["period"] == second.result["period"]


def test_malformed_period_fails_without_running(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    sent = stack.client.app.send_task(
        routing.DAILY_REPORT.name, args=["2099-13-01"], queue=routing.Q_MAINTENANCE
    )
    outcome = stack.wait(sent.id)
    assert outcome.state == "FAILURE" and (outcome.error or "").startswith("ValueError")
    assert not stack.cache_keys()


@contextlib.contextmanager
def _session(stack: harness.Stack) -> Iterator[Session]:
    """A session on the stack's database (the worker's), closed with its engine."""
    engine = make_engine(stack.database_url)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _snapshot(at: dt.datetime, hits: int, misses: int) -> dict[str, Any]:
    member = {"hits": hits, "misses": misses, "errors": 0, "writes": misses}
    process = {"started_at": 1.0, "by_type": {"member": member}, "lifetimes": {}}
    redis = {"run_id": "r", "keyspace_hits": hits, "keyspace_misses": misses, "evicted_keys": 0}
    return {"processes": {"worker-1": process}, "redis": redis | {"used_memory": 1 << 20}}


def test_daily_report_reads_yesterdays_snapshots_and_alerts(clean_stack: harness.Stack) -> None:
    """Snapshots of 2098-06-30 stored as the snapshot task stores them; the report run on
    2098-07-01 finds a 60% hit rate and says so."""
    stack = clean_stack
    day = dt.datetime(2098, 6, 30, tzinfo=dt.UTC)
    with _session(stack) as session:
        for minute, (hits, misses) in enumerate([(0, 0), (300, 200), (600, 400)]):
            at = day + dt.timedelta(hours=minute * 6)
            reports.add_snapshot(session, at, _snapshot(at, hits, misses))
        session.commit()
    spec = routing.DAILY_REPORT
    done = stack.wait(
        stack.client.app.send_task(spec.name, args=["2098-07-01"], queue=spec.queue).id
    )
    assert done.state == "SUCCESS", done.error
    assert done.result["result"]["status"] == "alert"
    with _session(stack) as session:
        report = reports.get_report(session, "daily_report", "2098-07-01")
    assert report is not None and report["status"] == "alert"
    assert report["alert"] == "hit rate 60.0% below 80%"
    cache = report["payload"]["cache"]
    assert (cache["hits"], cache["misses"], cache["hit_rate"]) == (600, 400, 0.6)
    assert report["payload"]["redis"]["hit_rate"] == 0.6
    assert report["payload"]["snapshots"] == 3


def test_backup_and_audit_run_for_real_on_the_stack(clean_stack: harness.Stack) -> None:
    """The stack's redis-server is the test's own: BGSAVE and CONFIG are allowed there."""
    stack = clean_stack
    backup_spec, audit_spec = routing.DAILY_BACKUP, routing.QUARTERLY_AUDIT
    backup = stack.wait(
        stack.client.app.send_task(
            backup_spec.name, args=["2097-01-02"], queue=backup_spec.queue
        ).id
    )
    audited = stack.wait(
        stack.client.app.send_task(audit_spec.name, args=["2097-Q1"], queue=audit_spec.queue).id
    )
    assert backup.state == audited.state == "SUCCESS", (backup.error, audited.error)
    with _session(stack) as session:
        copy = reports.get_report(session, "daily_backup", "2097-01-02")
        findings = reports.get_report(session, "quarterly_audit", "2097-Q1")
    assert copy is not None and copy["status"] == "ok", copy
    assert copy["payload"]["copy"].endswith("var/backups/dump-2097-01-02.rdb")
    assert findings is not None and findings["status"] == "alert"  # the test server is open
    assert any(f["check"] == "commands" for f in findings["payload"]["findings"])
