"""The maintenance cadence on a real worker: each job once per period, whoever sends it."""

from __future__ import annotations

import pytest

from tests.workers import harness
from workers import routing
from workers.beat import JOBS, schedule
from workers.periods import PeriodGuard

pytestmark = pytest.mark.slow

MAINTENANCE = [job.spec for job in JOBS if job.spec.queue == routing.Q_MAINTENANCE]
PERIODS = {
    "daily": "2099-03-04",
    "weekly": "2099-W10",
    "monthly": "2099-03",
    "quarterly": "2099-Q1",
}


@pytest.mark.parametrize("spec", MAINTENANCE, ids=lambda spec: spec.name.rsplit(".", 1)[-1])
def test_same_job_same_period_runs_once(clean_stack: harness.Stack, spec: routing.TaskSpec) -> None:
    """Three sends of one job for one period, as from duplicated beat ticks, in flight
    together on a worker with two processes: exactly one runs the body."""
    stack = clean_stack
    cadence = next(job.cadence for job in JOBS if job.spec is spec)
    period = PERIODS[cadence]
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
    job = spec.name.rsplit(".", 1)[-1]
    record = guard.record(job, period)
    assert record is not None and record["state"] == "done"
    winner = next(r for r, o in zip(sent, outcomes, strict=True) if o.result["ran"])
    assert record["token"] == winner.id
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
