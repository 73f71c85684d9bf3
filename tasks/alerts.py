"""Webhook delivery of alerts (queue maintenance): one POST per attempt, the answer decides.

The alert and its JSON are workers/alerts.py's; producers enqueue it through
``TaskClient.enqueue_alert`` (the task name is routing.DELIVER_ALERT's). What an answer
means is a pure function, :func:`judge`, so a test reads the policy without a server::

    2xx                              delivered
    connection error, timeout,       retried: full jitter under ALERT_WEBHOOK_BACKOFF_S x 2^n,
    408, 429, 5xx                    capped at routing.RETRY_BACKOFF_MAX; a Retry-After of a
                                     408, 429 or 503 is honoured (also capped)
    any other answer (4xx, 3xx)      not retried: the receiver refuses it, waiting won't help
    no ALERT_WEBHOOK_URL here,       not sent
    a malformed alert

After ALERT_WEBHOOK_MAX_RETRIES retries, or at once when not retried, the alert goes to the
dead-letter list (workers.alerts.dead_letter) and the log. The task then ends in SUCCESS with
``delivered: false``: it did what it could; the dead letter is where the alert is kept. (The
sender publishes it with ``ignore_result``, workers/client.py: the outcome is in the log,
Flower's task states and the dead letters, not in the result backend.)

Retries are the task's own (``self.retry`` with a countdown), not Celery's autoretry: the
backoff base and the bound are settings, and a Retry-After can shorten or lengthen a wait.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Final

import httpx
from celery import Task, shared_task

from celeryconfig import uses_rabbitmq
from tasks.runtime import runtime_of
from workers import routing
from workers.alerts import Alert, dead_letter

log = logging.getLogger("tasks.alerts")

RETRIED_STATUSES: Final = frozenset({408, 429})  # and every 5xx
USER_AGENT: Final = "membership-cache-alerts/1"


@dataclass(frozen=True, slots=True)
class Verdict:
    delivered: bool
    retry: bool
    reason: str
    retry_after: float | None = None  # seconds the receiver asked for


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: the backoff decides instead
    return seconds if seconds >= 0 else None


def judge(status: int | None, error: str | None = None, retry_after: str | None = None) -> Verdict:
    """What an attempt's outcome means: ``status`` of the answer, or None with ``error``
    (the transport error) when there was none."""
    if status is None:
        return Verdict(False, True, f"no answer: {error}")
    if 200 <= status < 300:
        return Verdict(True, False, f"answered {status}")
    if status in RETRIED_STATUSES or 500 <= status < 600:
        return Verdict(False, True, f"answered {status}", _retry_after(retry_after))
    return Verdict(False, False, f"answered {status}: refused, not retried")


def backoff(retries: int, base: float, retry_after: float | None = None) -> float:
    """Seconds before retry number ``retries + 1``: full jitter under base x 2^retries, or
    the receiver's Retry-After; capped at routing.RETRY_BACKOFF_MAX either way."""
    cap = float(routing.RETRY_BACKOFF_MAX)
    if retry_after is not None:
        return min(cap, retry_after)
    return random.uniform(0, min(cap, base * 2.0**retries))


def post(url: str, document: dict[str, Any], timeout: float) -> Verdict:
    """One POST of the alert's JSON; its verdict."""
    headers = {"User-Agent": USER_AGENT, "X-Alert-Id": str(document.get("id", ""))}
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            answer = client.post(url, json=document, headers=headers)
    except httpx.HTTPError as exc:  # connection refused or reset, timeouts, protocol errors
        return judge(None, f"{type(exc).__name__}: {exc}")
    return judge(answer.status_code, retry_after=answer.headers.get("retry-after"))


@shared_task(bind=True, **routing.task_options(routing.DELIVER_ALERT))
def deliver_alert(self: Task[Any, Any], alert: dict[str, Any]) -> dict[str, Any]:
    """POST ``alert`` to ALERT_WEBHOOK_URL; retry while it may help, then dead-letter it."""
    runtime = runtime_of(self)
    settings = runtime.settings
    attempts = self.request.retries + 1
    dead = runtime.worker.services.redis("durable")  # platform state, never evicted
    try:
        document = Alert.from_json(alert).as_json()
    except ValueError as exc:
        dead_letter(dead, runtime.cache.keys, _as_mapping(alert), f"malformed: {exc}", attempts)
        return {"delivered": False, "reason": f"malformed: {exc}", "attempts": attempts}
    url = settings.alert_webhook_url.get_secret_value()
    if not url:
        verdict = Verdict(False, False, "ALERT_WEBHOOK_URL is not set on this worker")
    else:
        verdict = post(url, document, settings.alert_webhook_timeout_s)
    if verdict.delivered:
        log.info("alert %s delivered (%s, attempt %d)", document["id"], verdict.reason, attempts)
        return {"delivered": True, "reason": verdict.reason, "attempts": attempts}
    if verdict.retry and self.request.retries < settings.alert_webhook_max_retries:
        countdown = backoff(
            self.request.retries, settings.alert_webhook_backoff_s, verdict.retry_after
        )
        if uses_rabbitmq(self.app.conf.broker_url):
            # Celery's native delayed delivery (quorum queues) counts whole seconds and
            # refuses a countdown under one; the Redis transport's ETA takes fractions.
            countdown = max(1.0, countdown)
        log.warning(
            "alert %s not delivered (%s); retry in %.1fs", document["id"], verdict.reason, countdown
        )
        raise self.retry(  # a builtin: a client reading the RETRY state imports nothing
            exc=RuntimeError(f"webhook: {verdict.reason}"),
            countdown=countdown,
            max_retries=settings.alert_webhook_max_retries,
        )
    reason = verdict.reason if not verdict.retry else f"gave up after {attempts}: {verdict.reason}"
    dead_letter(dead, runtime.cache.keys, document, reason, attempts)
    return {"delivered": False, "reason": reason, "attempts": attempts}


def _as_mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"raw": repr(value)[:1000]}
