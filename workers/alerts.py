"""Alerts for installations without Alertmanager: what one is, how it is raised, where it
lands when it cannot be sent.

Two producers raise alerts: a maintenance job that stored a report with an ``alert``
(tasks/maintenance.py) and the management API when a burst of refused tokens crosses its
threshold (api_stub/management/refusals.py). Each hands an :class:`Alert` to its process's
:class:`AlertSender`, which enqueues ``tasks.alerts.deliver_alert`` (workers/routing.py,
DELIVER_ALERT); the task POSTs it to ALERT_WEBHOOK_URL and owns the retries.

Raising an alert never fails the thing that raised it. The sender catches everything: a
broker that does not take the message within a short publish retry, or any other error, puts
the alert in the dead-letter list and logs it; if even Redis is gone, the log line carries
the whole alert. The task dead-letters what the webhook still refuses after its retries.

The JSON POSTed (``Alert.as_json``), version 1; field names are stable::

    {
      "version": 1,
      "id": "report:daily_report:2026-12-05",  # stable per event: a receiver may dedupe on it
      "kind": "report" | "security",
      "severity": "warning" | "critical",
      "summary": "daily_report 2026-12-05: hit rate 42.0% below 80%",   # one line
      "details": {...},                          # per kind, below
      "occurred_at": "2026-12-06T00:05:02.123456+00:00",   # ISO 8601, UTC
      "source": "worker-host-1234"              # the process that raised it (role-host-pid)
    }

    report    details: job, period, status, report_id, alerts (the report's list of alerts)
    security  details: subject ("address" or "token"), client (the address or the token's
              label), refusals, window_s, status (401 or 403), path (the latest one)

Delivery is at least once: a POST whose answer was lost is sent again, with the same id.

Dead letters: the list ``<prefix>sys:alerts:dead`` (durable role, newest first, the newest
DEAD_KEEP kept), each entry ``{"alert": {...}, "reason": "...", "failed_at": ISO,
"attempts": N}``. Read them with ``redis-cli LRANGE <prefix>sys:alerts:dead 0 -1``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cache.client import SyncRedis
from cache.keys import Keys

log = logging.getLogger("workers.alerts")

VERSION: Final = 1
KINDS: Final = ("report", "security")
SEVERITIES: Final = ("warning", "critical")
Kind = Literal["report", "security"]
Severity = Literal["warning", "critical"]
MAX_SUMMARY: Final = 500  # characters; a summary is one line for a chat message or a pager
DEAD_KEEP: Final = 1000  # dead letters kept; older ones are dropped (they are logged too)
_FIELDS: Final = (
    "version",
    "id",
    "kind",
    "severity",
    "summary",
    "details",
    "occurred_at",
    "source",
)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: Kind
    severity: Severity
    summary: str
    details: Mapping[str, Any]
    source: str
    occurred_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}; expected one of {KINDS}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; expected one of {SEVERITIES}")
        if not isinstance(self.summary, str) or not self.summary.strip():
            raise ValueError("an alert needs a summary")
        if not isinstance(self.details, Mapping):
            raise ValueError("details must be a JSON object")
        for name in ("source", "id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 200:
                raise ValueError(f"{name} must be a non-empty string of at most 200 characters")
        try:
            when = dt.datetime.fromisoformat(self.occurred_at)
        except (TypeError, ValueError):
            raise ValueError(f"occurred_at must be ISO 8601, got {self.occurred_at!r}") from None
        if when.tzinfo is None:
            raise ValueError("occurred_at must carry its offset (UTC)")
        # One line, bounded: a multi-line alert text becomes "a; b".
        line = "; ".join(part.strip() for part in self.summary.splitlines() if part.strip())
        object.__setattr__(self, "summary", line[:MAX_SUMMARY])

    def as_json(self) -> dict[str, Any]:
        """The document POSTed to the webhook (module docstring)."""
        return {
            "version": VERSION,
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "summary": self.summary,
            "details": dict(self.details),
            "occurred_at": self.occurred_at,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: object) -> Alert:
        """The alert of a document (a task's argument); ValueError for anything else."""
        if not isinstance(data, Mapping):
            raise ValueError("an alert is a JSON object")
        if data.get("version") != VERSION:
            raise ValueError(f"unknown alert version {data.get('version')!r}")
        if set(data) != set(_FIELDS):
            raise ValueError(f"an alert has exactly the fields {_FIELDS}")
        return cls(
            kind=data["kind"],
            severity=data["severity"],
            summary=data["summary"],
            details=data["details"],
            source=data["source"],
            occurred_at=data["occurred_at"],
            id=data["id"],
        )


def dead_key(keys: Keys) -> str:
    return keys.system("alerts", "dead")


def dead_letter(
    client: SyncRedis, keys: Keys, alert: Mapping[str, Any], reason: str, attempts: int = 0
) -> bool:
    """Keep an alert that could not be delivered where an operator sees it, and log it.

    Never raises: if Redis does not take it either, the log line carries the whole alert.
    """
    entry = {
        "alert": dict(alert),
        "reason": reason,
        "failed_at": dt.datetime.now(dt.UTC).isoformat(),
        "attempts": attempts,
    }
    text = json.dumps(entry, default=str, sort_keys=True)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(dead_key(keys), text)
        pipe.ltrim(dead_key(keys), 0, DEAD_KEEP - 1)
        pipe.execute()
    except Exception as exc:  # Redis down too: the log is the last place left
        log.error("alert lost, not even dead-lettered (%s): %s", exc, text)
        return False
    log.error("alert dead-lettered in %s: %s: %s", dead_key(keys), reason, alert.get("summary"))
    return True


def dead_letters(client: SyncRedis, keys: Keys, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters, newest first."""
    return [json.loads(raw) for raw in client.lrange(dead_key(keys), 0, max(0, limit - 1))]


Enqueue = Callable[[dict[str, Any]], str]


def _given(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class AlertSender:
    """A process's way to raise alerts: enqueue the delivery, never fail the caller.

    ``enqueue`` is the task client's ``enqueue_alert`` (one publish, a short retry); ``dead``
    the durable role's client, for the dead letters; ``enabled`` is ALERT_WEBHOOK_URL set.
    """

    enqueue: Enqueue
    dead: SyncRedis
    keys: Keys
    source: str
    enabled: bool

    def alert(
        self,
        kind: Kind,
        severity: Severity,
        summary: str,
        details: Mapping[str, Any],
        *,
        id: str | None = None,
    ) -> str | None:
        """Raise one alert: the delivery task's id; None when alerts are off or it was not
        enqueued (then it is dead-lettered and logged). Never raises."""
        if not self.enabled:
            return None
        try:
            made = Alert(kind, severity, summary, details, self.source, **_given(id=id))
            document = made.as_json()
        except Exception:  # a producer's mistake must not fail the report or the request
            log.exception("alert not raised: %s %s", kind, summary)
            return None
        try:
            task_id = self.enqueue(document)
        except Exception as exc:
            dead_letter(
                self.dead, self.keys, document, f"not enqueued: {type(exc).__name__}: {exc}"
            )
            return None
        log.warning("alert %s raised (task %s): %s", made.id, task_id, made.summary)
        return task_id
