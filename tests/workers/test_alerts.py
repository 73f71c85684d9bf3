"""The alert document (workers/alerts.py): its fields, what it refuses, and the sender's
promise never to fail its caller (real Redis for the dead letters)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from cache import CacheService, build_cache
from config import load_settings
from workers.alerts import DEAD_KEEP, MAX_SUMMARY, Alert, AlertSender, dead_letter, dead_letters

FIELDS = ["version", "id", "kind", "severity", "summary", "details", "occurred_at", "source"]


def _alert(**changes: Any) -> dict[str, Any]:
    made = Alert("report", "warning", "daily_report 2026-12-05: hit rate low", {"a": 1}, "w-1")
    return made.as_json() | changes


def test_the_document_has_the_documented_fields_and_round_trips() -> None:
    document = _alert()
    assert list(document) == FIELDS
    assert document["version"] == 1 and len(document["id"]) == 32
    assert dt.datetime.fromisoformat(document["occurred_at"]).utcoffset() == dt.timedelta(0)
    assert Alert.from_json(document).as_json() == document


def test_a_summary_is_one_bounded_line() -> None:
    made = Alert("security", "critical", "first\n\n  second  \n", {}, "api-1")
    assert made.summary == "first; second"
    assert len(Alert("security", "critical", "x" * 5000, {}, "api-1").summary) == MAX_SUMMARY


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        _alert(version=2),
        _alert(kind="page"),
        _alert(severity="info"),
        _alert(summary="  "),
        _alert(details=["not", "an", "object"]),
        _alert(occurred_at="yesterday"),
        _alert(occurred_at="2026-12-06T00:00:00"),  # no offset
        _alert(source=""),
        _alert(extra=True),
        {key: value for key, value in _alert().items() if key != "source"},
    ],
)
def test_a_malformed_document_is_refused(document: object) -> None:
    with pytest.raises(ValueError):
        Alert.from_json(document)


@pytest.fixture
def sender_parts(cache: CacheService) -> Iterator[tuple[Any, Any]]:
    yield cache.clients.writer, cache.keys


def test_the_sender_never_raises_and_keeps_what_it_could_not_enqueue(
    sender_parts: tuple[Any, Any],
) -> None:
    client, keys = sender_parts
    sent: list[dict[str, Any]] = []

    def refused(_: dict[str, Any]) -> str:
        raise ConnectionError("broker down")

    off = AlertSender(lambda doc: sent.append(doc) or "t", client, keys, "w-1", enabled=False)
    assert off.alert("report", "warning", "s", {}) is None and sent == []

    on = AlertSender(lambda doc: sent.append(doc) or "t-1", client, keys, "w-1", enabled=True)
    assert on.alert("report", "warning", "s", {"n": 1}, id="report:j:p") == "t-1"
    assert sent[0]["id"] == "report:j:p" and sent[0]["source"] == "w-1"
    assert on.alert("page", "warning", "s", {}) is None  # type: ignore[arg-type]
    assert len(sent) == 1  # a producer's mistake is logged, not sent, not raised

    broken = AlertSender(refused, client, keys, "w-1", enabled=True)
    assert broken.alert("security", "warning", "burst", {}) is None
    (letter,) = dead_letters(client, keys)
    assert letter["reason"] == "not enqueued: ConnectionError: broker down"
    assert letter["alert"]["summary"] == "burst"


def test_dead_letters_are_bounded_newest_first(sender_parts: tuple[Any, Any]) -> None:
    client, keys = sender_parts
    for number in range(DEAD_KEEP + 5):
        assert dead_letter(client, keys, {"n": number}, "refused")
    kept = dead_letters(client, keys, limit=DEAD_KEEP + 10)
    assert len(kept) == DEAD_KEEP and kept[0]["alert"] == {"n": DEAD_KEEP + 4}


def test_a_dead_letter_without_redis_is_logged_whole(caplog: pytest.LogCaptureFixture) -> None:
    down = build_cache(load_settings(redis_port=1, _env_file=None))
    try:
        assert not dead_letter(down.clients.writer, down.keys, {"summary": "s3"}, "refused")
    finally:
        down.close()
    assert any('"summary": "s3"' in record.getMessage() for record in caplog.records)
