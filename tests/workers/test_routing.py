"""The routing table (workers/routing.py) is the one declaration: names, queues, limits,
schedules, cadences, report names and the constants client and tasks share come from it."""

from __future__ import annotations

import pytest

import tasks.consistency
import tasks.invalidation
import tasks.maintenance
import tasks.metrics
import tasks.warmup
import tasks.writebehind
from api_stub.management import schemas
from db import reports
from workers import routing


def test_report_job_names_are_the_tables() -> None:
    """The rows of maintenance_reports (and the API's /reports filter) are named by the specs
    that say they report: the five maintenance jobs, under their guard's job name."""
    assert reports.JOBS is routing.REPORT_JOBS
    assert reports.JOBS == (
        "daily_report",
        "daily_backup",
        "weekly_ttl_review",
        "monthly_capacity",
        "quarterly_audit",
    )
    reporting = [spec for spec in routing.TASKS if spec.reports]
    assert all(spec.queue == routing.Q_MAINTENANCE and spec.beat for spec in reporting)
    # Each maintenance task is registered under the name of its reporting spec.
    for spec in reporting:
        assert getattr(tasks.maintenance, spec.guarded_job).name == spec.name


def test_wire_names_are_unchanged() -> None:
    """Task names are part of the message format: the table keeps the names producers send."""
    assert {spec.name for spec in routing.TASKS} == {
        "tasks.warmup.warmup_critical",
        "tasks.warmup.warmup_all",
        "tasks.warmup.warmup_members",
        "tasks.warmup.warmup_data_type",
        "tasks.chunks.warmup_chunk",
        "tasks.chunks.warmup_finish",
        "tasks.autowarm.auto_warm",
        "tasks.autowarm.watch_redis",
        "tasks.refresh.refresh_ahead",
        "tasks.invalidation.on_member_change",
        "tasks.invalidation.on_bulk_operation",
        "tasks.alerts.deliver_alert",
        "tasks.metrics.snapshot",
        "tasks.writebehind.flush_writebehind",
        "tasks.consistency.check_consistency",
        "tasks.maintenance.daily_report",
        "tasks.maintenance.daily_backup",
        "tasks.maintenance.weekly_ttl_review",
        "tasks.maintenance.monthly_capacity",
        "tasks.maintenance.quarterly_audit",
    }
    assert tasks.metrics.snapshot.name == routing.METRICS_SNAPSHOT.name
    assert tasks.writebehind.flush_writebehind.name == routing.FLUSH_WRITEBEHIND.name
    assert tasks.consistency.check_consistency.name == routing.CHECK_CONSISTENCY.name


def test_shared_constants_have_one_definition() -> None:
    assert tasks.warmup.MAX_IDS is routing.MAX_IDS
    assert schemas.MAX_IDS is routing.MAX_IDS
    assert tasks.invalidation.MEMBER_ACTIONS is routing.MEMBER_ACTIONS
    assert tasks.invalidation.BULK_KINDS is routing.BULK_KINDS
    assert tasks.writebehind.FLUSH_WRITEBEHIND is routing.FLUSH_WRITEBEHIND
    assert tasks.metrics.SPEC is routing.METRICS_SNAPSHOT


def test_a_spec_refuses_what_cannot_be_routed_or_guarded() -> None:
    with pytest.raises(ValueError, match="undeclared queue"):
        routing.TaskSpec("t.typo", "cache.warmpu", 1, 2)
    with pytest.raises(ValueError, match="cadence goes with a job"):
        routing.TaskSpec("t.half", routing.Q_METRICS, 1, 2, cadence="daily")
    with pytest.raises(ValueError, match="give a cadence"):
        routing.TaskSpec("t.report", routing.Q_MAINTENANCE, 1, 2, reports=True)
    with pytest.raises(ValueError, match="no cadence"):
        _ = routing.WARMUP_ALL.guarded_job


def test_every_guarded_job_name_is_distinct() -> None:
    """Two tasks under one job name would share a period's claim: one would never run."""
    jobs = [spec.job for spec in routing.TASKS if spec.job is not None]
    assert len(jobs) == len(set(jobs))
    entries = [spec.beat.entry for spec in routing.SCHEDULED if spec.beat]
    assert len(entries) == len(set(entries))
