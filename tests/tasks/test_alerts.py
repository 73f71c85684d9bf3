"""Alerts to a webhook: raised by their real producers (a maintenance report with an alert,
a burst of refused tokens on the management API), delivered by the real task on an
in-process worker, to a real HTTP receiver on loopback (tests/support/webhook.py).

What an answer means (retry or not, backoff) is also read without a server: ``judge``.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api_stub.management import ManagementConfig
from config import Settings
from tasks.alerts import backoff, judge
from tests.management.conftest import Tokens, serve
from tests.support.redis_procs import RedisProcess
from tests.support.webhook import Receiver, free_port
from tests.workers import harness, services
from tests.workers.conftest import BOTH_BROKERS, InProcess
from workers import routing
from workers.alerts import VERSION, dead_letters

FIELDS = {"version", "id", "kind", "severity", "summary", "details", "occurred_at", "source"}


@pytest.fixture
def tokens() -> Tokens:
    return Tokens({role: secrets.token_urlsafe(32) for role in ("viewer", "operator", "admin")})


@pytest.fixture
def webhook_port() -> int:
    return free_port()


@pytest.fixture
def alert_retries() -> int:
    return 8  # a test parametrizes it to watch the bound


@pytest.fixture
def task_env(
    task_redis: RedisProcess,
    pg_database: str,
    tmp_path: Path,
    webhook_port: int,
    alert_retries: int,
) -> dict[str, str]:
    """tests/workers/conftest.py's environment, with a webhook on loopback, short backoffs,
    and dump files that do not exist (the backup fails, which is an alert)."""
    prefix = f"test-task-{uuid.uuid4().hex[:8]}:"
    return services.stack_env(
        prefix,
        task_redis.port,
        pg_database,
        BACKUP_DIR=str(tmp_path / "backups"),
        REDIS_DUMP_FILES=str(tmp_path / "absent" / "dump.rdb"),
        ALERT_WEBHOOK_URL=f"http://127.0.0.1:{webhook_port}/hooks/alerts",
        ALERT_WEBHOOK_BACKOFF_S="0.1",
        ALERT_WEBHOOK_MAX_RETRIES=str(alert_retries),
    )


@pytest.fixture
def receiver(webhook_port: int) -> Iterator[Receiver]:
    """The receiver, not started: a test starts it (with its script) when it wants."""
    made = Receiver(webhook_port)
    yield made
    made.stop()


def _period() -> str:
    """A daily period of the test's own (no snapshots in it: a no_data report, an alert)."""
    day = dt.date(2099, 1, 1) + dt.timedelta(days=uuid.uuid4().int % 20_000)
    return day.isoformat()


def _report_alert(worker: InProcess, spec: routing.TaskSpec = routing.DAILY_REPORT) -> str:
    """Run a maintenance job whose report carries an alert; the alert delivery's task id."""
    done = worker.run(spec, _period())
    assert done.state == "SUCCESS", done.error
    result = done.result["result"]
    assert result["alert"], result
    task_id = result["alert_task_id"]
    assert task_id, result
    return str(task_id)


def _letters(worker: InProcess) -> list[dict[str, Any]]:
    return dead_letters(worker.runtime.services.redis("durable"), worker.cache.keys)


def _dead_letter(worker: InProcess) -> dict[str, Any]:
    """The one dead letter, once it is there."""
    (letter,) = harness.wait_for(lambda: _letters(worker), 20.0, "a dead letter")
    return letter


def _retries_logged(caplog: pytest.LogCaptureFixture, alert_id: str) -> list[str]:
    """The worker's log lines about retrying ``alert_id`` (its threads log to this process)."""
    return [
        r.getMessage()
        for r in list(caplog.records)
        if r.name == "tasks.alerts" and alert_id in r.getMessage() and "retry in" in r.getMessage()
    ]


def test_a_report_alert_is_delivered_with_the_documented_json(
    worker: InProcess, receiver: Receiver
) -> None:
    receiver.start()
    period = _period()
    done = worker.run(routing.DAILY_REPORT, period)
    assert done.state == "SUCCESS", done.error
    report = done.result["result"]
    assert report["status"] == "no_data" and report["alert"] and report["alert_task_id"]

    (body,) = receiver.wait_for(lambda bodies: len(bodies) >= 1)
    assert set(body) == FIELDS
    assert body["version"] == VERSION == 1
    assert body["id"] == f"report:daily_report:{period}"
    assert (body["kind"], body["severity"]) == ("report", "warning")
    assert body["summary"] == f"daily_report {period}: {report['alert']}"
    assert body["details"] == {
        "job": "daily_report",
        "period": period,
        "status": "no_data",
        "report_id": report["report_id"],
        "alerts": [report["alert"]],
    }
    assert dt.datetime.fromisoformat(body["occurred_at"]).utcoffset() == dt.timedelta(0)
    assert body["source"].startswith("worker-")
    (headers,) = receiver.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Alert-Id"] == body["id"]
    time.sleep(0.3)
    assert receiver.bodies() == [body] and _letters(worker) == []


def test_a_failed_backup_is_a_critical_alert(worker: InProcess, receiver: Receiver) -> None:
    receiver.start()
    _report_alert(worker, routing.DAILY_BACKUP)
    (body,) = receiver.wait_for(lambda bodies: len(bodies) >= 1)
    assert (body["kind"], body["severity"]) == ("report", "critical")
    assert body["details"]["job"] == "daily_backup" and body["details"]["status"] == "failed"
    assert "backup failed" in body["summary"]


@pytest.mark.anyio
async def test_a_burst_of_refused_tokens_is_one_security_event(
    worker: InProcess, receiver: Receiver, task_settings: Settings, tokens: Tokens
) -> None:
    receiver.start()
    config = ManagementConfig(rate_limit=100_000, refusal_threshold=5, refusal_window_s=60)
    async with serve(task_settings, tokens, config) as api:
        for _ in range(12):  # a script guessing tokens
            answer = await api.call("GET", "/api/v1/cache/reports", "wrong")
            assert answer.status_code == 401
        for _ in range(3):  # a viewer trying an operator's action: 403s, below the threshold
            answer = await api.call(
                "POST", "/api/v1/cache/invalidation/trigger", "viewer", json={"tags": ["members"]}
            )
            assert answer.status_code == 403
        await api.runtime.refusals.drain()
    (event,) = receiver.wait_for(lambda bodies: len(bodies) >= 1)
    time.sleep(1.0)  # nothing else arrives: once per burst, not per request
    assert receiver.bodies() == [event]
    assert set(event) == FIELDS
    assert (event["kind"], event["severity"]) == ("security", "warning")
    assert event["details"] == {
        "subject": "address",
        "client": "127.0.0.1",
        "refusals": 5,
        "window_s": 60,
        "status": 401,
        "path": "/api/v1/cache/reports",
    }
    assert event["source"].startswith("api-")


@BOTH_BROKERS  # the retries' countdowns: Redis's ETA, RabbitMQ's native delayed delivery
def test_a_receiver_refusing_connections_gets_the_alert_once_it_is_back(
    worker: InProcess, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasks.alerts")
    _report_alert(worker)  # nothing listens on the webhook's port yet
    harness.wait_for(lambda: _retries_logged(caplog, "report:daily_report:"), 20.0, "a retry")
    assert "ConnectError" in _retries_logged(caplog, "report:daily_report:")[0]
    receiver.start()
    (body,) = receiver.wait_for(lambda bodies: len(bodies) >= 1)
    assert body["kind"] == "report"
    time.sleep(0.3)
    assert len(receiver.bodies()) == 1 and _letters(worker) == []


def test_a_receiver_answering_503_gets_the_alert_once_it_is_back(
    worker: InProcess, receiver: Receiver
) -> None:
    receiver.answers = [503, 503]
    receiver.start()
    _report_alert(worker)
    first, *again = receiver.wait_for(lambda bodies: len(bodies) >= 3)
    assert again == [first, first]  # the same document (and id) each time
    time.sleep(0.5)  # delivered by the third: no fourth, no dead letter
    assert len(receiver.bodies()) == 3 and _letters(worker) == []


def test_a_400_is_not_retried_and_the_alert_is_dead_lettered(
    worker: InProcess, receiver: Receiver
) -> None:
    receiver.answers = [400]
    receiver.start()
    _report_alert(worker)
    letter = _dead_letter(worker)
    assert letter["reason"] == "answered 400: refused, not retried"
    assert letter["attempts"] == 1
    time.sleep(0.5)  # a retry would have come by now (backoff ceiling 0.1 s)
    assert receiver.bodies() == [letter["alert"]]


@pytest.mark.parametrize("alert_retries", [2])
def test_retries_are_bounded_then_the_alert_is_dead_lettered(
    worker: InProcess, receiver: Receiver, alert_retries: int
) -> None:
    receiver.default = 503
    receiver.start()
    _report_alert(worker)
    letter = _dead_letter(worker)
    assert letter["reason"] == "gave up after 3: answered 503"
    assert letter["attempts"] == alert_retries + 1 == len(receiver.bodies())


@pytest.mark.parametrize(
    ("status", "delivered", "retried"),
    [
        (200, True, False),
        (204, True, False),
        (None, False, True),  # connection refused, timeout
        (408, False, True),
        (429, False, True),
        (500, False, True),
        (503, False, True),
        (301, False, False),  # a redirect is not followed: fix the URL
        (400, False, False),
        (401, False, False),
        (404, False, False),
        (413, False, False),
    ],
)
def test_what_an_answer_means(status: int | None, delivered: bool, retried: bool) -> None:
    verdict = judge(status, None if status else "ConnectError")
    assert (verdict.delivered, verdict.retry) == (delivered, retried)


def test_backoff_has_full_jitter_under_a_doubling_ceiling_and_honours_retry_after() -> None:
    waits = [backoff(3, 0.5) for _ in range(200)]
    assert min(waits) >= 0 and max(waits) <= 4.0 and len(set(waits)) > 100
    assert all(backoff(30, 1.0) <= routing.RETRY_BACKOFF_MAX for _ in range(50))
    assert judge(429, retry_after="7").retry_after == 7.0
    assert backoff(0, 1.0, 7.0) == 7.0 and backoff(0, 1.0, 3600.0) == routing.RETRY_BACKOFF_MAX
    assert judge(503, retry_after="Wed, 21 Oct 2099 07:28:00 GMT").retry_after is None
