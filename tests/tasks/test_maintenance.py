"""The maintenance cadence on a real (in-process) worker: each job once per period, whoever
sends it, and its report stored in PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from cache import DataType
from db import reports, session_factory
from db.models import MetricsSnapshot
from tests.workers.conftest import InProcess
from workers import routing
from workers.beat import schedule

MAINTENANCE = [spec for spec in routing.SCHEDULED if spec.queue == routing.Q_MAINTENANCE]
PERIODS = {
    "daily": "2099-03-04",
    "weekly": "2099-W10",
    "monthly": "2099-03",
    "quarterly": "2099-Q1",
}


def _session(engine: Engine) -> Session:
    return session_factory(engine)()


@pytest.mark.parametrize("spec", MAINTENANCE, ids=lambda spec: spec.guarded_job)
def test_same_job_same_period_runs_once(
    worker: InProcess, pg_engine: Engine, spec: routing.TaskSpec
) -> None:
    """Three sends of one job for one period, as from duplicated beat ticks, in flight
    together on a worker running two at a time: exactly one runs the body."""
    period = PERIODS[spec.guarded_cadence]
    sent = [worker.client.send(spec, period) for _ in range(3)]
    outcomes = [worker.wait(task_id) for task_id in sent]
    assert all(outcome.state == "SUCCESS" for outcome in outcomes), outcomes
    ran = [outcome.result for outcome in outcomes if outcome.result["ran"]]
    assert len(ran) == 1
    assert {outcome.result["period"] for outcome in outcomes} == {period}
    # The period's record, as a later duplicate is shown it, names the run that did the work.
    job = spec.guarded_job
    late = worker.wait(worker.client.send(spec, period))
    record = late.result["record"]
    assert late.result["ran"] is False and record["state"] == "done"
    winner = next(t for t, o in zip(sent, outcomes, strict=True) if o.result["ran"])
    assert record["token"] == winner
    # ... and one report row, the one the run stored.
    with _session(pg_engine) as session:
        stored = [r for r in reports.list_reports(session, job) if r["period"] == period]
    assert [r["id"] for r in stored] == [ran[0]["result"]["report_id"]]
    assert stored[0]["status"] == ran[0]["result"]["status"]
    # The next period is another run.
    nxt = worker.wait(worker.client.send(spec, period[:-1] + "2"))
    assert nxt.result["ran"] is True


def test_beat_tick_without_a_period_uses_the_current_one(worker: InProcess) -> None:
    """What beat sends (the entry as configured, no arguments) runs for the current period,
    and a second identical tick is a no-op."""
    entry = schedule()[routing.DAILY_REPORT.beat.entry]  # type: ignore[union-attr]
    first = worker.wait(worker.app.send_task(entry["task"], **entry["options"]).id)
    second = worker.wait(worker.app.send_task(entry["task"], **entry["options"]).id)
    assert (first.result["ran"], second.result["ran"]) == (True, False)
    assert first.result["period"] == second.result["period"]


def test_malformed_period_fails_without_running(worker: InProcess) -> None:
    outcome = worker.run(routing.DAILY_REPORT, "2099-13-01")
    assert outcome.state == "FAILURE" and (outcome.error or "").startswith("ValueError")
    assert not worker.cache_keys()


def _traffic(worker: InProcess, hits: int, misses: int) -> None:
    """Member lookups through the worker's own cache service, whose counters it publishes."""
    cache = worker.cache
    present, absent = cache.keys.member(1), cache.keys.member(10**9)
    assert cache.set(present, {"id": 1}, DataType.MEMBER)
    for _ in range(hits):
        cache.get(present, DataType.MEMBER)
    for _ in range(misses):
        cache.get(absent, DataType.MEMBER)


def test_daily_report_reads_the_days_snapshots_and_alerts(
    worker: InProcess, pg_engine: Engine
) -> None:
    """Three snapshots taken by the snapshot task around 600 hits and 400 misses; the report
    for the next day finds a 60% hit rate over them and says so."""
    with _session(pg_engine) as session, session.begin():
        session.execute(delete(MetricsSnapshot))  # other tests' snapshots of today
    taken = []
    for minute, (hits, misses) in enumerate([(0, 0), (300, 200), (300, 200)]):
        _traffic(worker, hits, misses)
        # An explicit minute per snapshot: the guard allows one per minute.
        done = worker.run(routing.METRICS_SNAPSHOT, f"2099-01-01T000{minute}")
        assert done.state == "SUCCESS" and done.result["ran"], done.error
        taken.append(done.result["result"]["id"])
    with _session(pg_engine) as session:
        day = reports.latest_snapshot(session)
    assert day is not None and day["id"] == taken[-1]
    next_day = (dt.datetime.fromisoformat(day["taken_at"]) + dt.timedelta(days=1)).date()

    done = worker.run(routing.DAILY_REPORT, next_day.isoformat())
    assert done.state == "SUCCESS", done.error
    assert done.result["result"]["status"] == "alert"
    with _session(pg_engine) as session:
        report = reports.get_report(session, "daily_report", next_day.isoformat())
    assert report is not None and report["status"] == "alert"
    assert report["alert"] == "hit rate 60.0% below 80%"
    cache = report["payload"]["by_type"]["member"]
    assert (cache["hits"], cache["misses"], cache["hit_rate"]) == (600, 400, 0.6)
    assert report["payload"]["snapshots"] == 3
    assert report["payload"]["redis"]["keyspace_hits"] > 0


def test_backup_and_audit_run_for_real(worker: InProcess, pg_engine: Engine) -> None:
    """The worker's redis-server is the session's own: BGSAVE and CONFIG are allowed there."""
    backup = worker.run(routing.DAILY_BACKUP, "2097-01-02")
    audited = worker.run(routing.QUARTERLY_AUDIT, "2097-Q1")
    assert backup.state == audited.state == "SUCCESS", (backup.error, audited.error)
    with _session(pg_engine) as session:
        copy = reports.get_report(session, "daily_backup", "2097-01-02")
        findings = reports.get_report(session, "quarterly_audit", "2097-Q1")
    assert copy is not None and copy["status"] == "ok", copy
    assert copy["payload"]["copy"] == f"{worker.settings.backup_dir}/dump-2097-01-02.rdb"
    assert findings is not None and findings["status"] == "alert"  # the test server is open
    assert any(f["check"] == "commands" for f in findings["payload"]["findings"])
