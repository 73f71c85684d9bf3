"""Refused tokens counted cluster-wide (api_stub/management/refusals.py): a burst raises one
security alert, and nothing about it can fail or slow the refused request, not even a broker
that is down (the alert is then dead-lettered).

Delivery to a webhook by a worker: tests/tasks/test_alerts.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from api_stub.management import PREFIX, ManagementConfig
from tests.management.conftest import Mgmt, Tokens, serve, settings_for
from tests.support.webhook import free_port
from workers.alerts import dead_letters

pytestmark = pytest.mark.anyio
CONFIG = ManagementConfig(rate_limit=100_000, refusal_threshold=3, refusal_window_s=30)


@pytest.fixture
async def no_broker(prefix: str, database_url: str, tokens: Tokens) -> AsyncIterator[Mgmt]:
    """The API with alerts on, and a broker (and result backend) where nothing listens."""
    settings = settings_for(
        prefix, database_url, free_port(), alert_webhook_url="http://127.0.0.1:9/hook"
    )
    async with serve(settings, tokens, CONFIG) as running:
        yield running


async def test_a_burst_with_the_broker_down_answers_at_once_and_dead_letters_the_alert(
    no_broker: Mgmt,
) -> None:
    api = no_broker
    for _ in range(6):
        started = time.monotonic()
        answer = await api.call("GET", f"{PREFIX}/reports", "wrong")
        assert answer.status_code == 401
        assert time.monotonic() - started < 0.5  # the enqueue waits on no request
    started = time.monotonic()
    await api.runtime.refusals.drain(timeout=15)
    assert time.monotonic() - started < 5  # the publish gave up after a short retry
    durable = api.runtime.services.redis("durable")
    (letter,) = dead_letters(durable, api.runtime.cache.keys)
    assert letter["reason"].startswith("not enqueued: OperationalError")
    alert = letter["alert"]
    assert (alert["kind"], alert["summary"]) == (
        "security",
        "3 refused management API calls within 30s from address 127.0.0.1",
    )
    # One key per client address, expiring with its window.
    key = api.runtime.refusals.key("address", "127.0.0.1")
    assert int(durable.get(key) or 0) == 6 and 0 < durable.ttl(key) <= 30


async def test_only_presented_tokens_count_and_each_subject_has_its_own_burst(
    no_broker: Mgmt,
) -> None:
    api = no_broker
    refusals = api.runtime.refusals
    durable = api.runtime.services.redis("durable")
    for _ in range(5):  # no token at all: a browser or a probe, not a guess
        assert (await api.call("GET", f"{PREFIX}/reports", None)).status_code == 401
    assert durable.get(refusals.key("address", "127.0.0.1")) is None
    for _ in range(2):  # a viewer's token below an admin route, per token label
        assert (await api.call("GET", f"{PREFIX}/audit", "viewer")).status_code == 403
    assert int(durable.get(refusals.key("token", "viewer-test")) or 0) == 2
    # Below the threshold nothing is raised; the third of a subject raises, the fourth not.
    assert await refusals.refused("address", "2001:db8::7", 401, "/x") is False
    assert await refusals.refused("address", "2001:db8::7", 401, "/x") is False
    assert await refusals.refused("address", "2001:db8::7", 401, "/x") is True
    assert await refusals.refused("address", "2001:db8::7", 401, "/x") is False
    await refusals.drain(timeout=15)
    letters = dead_letters(durable, api.runtime.cache.keys)
    assert [letter["alert"]["details"]["client"] for letter in letters] == ["2001:db8::7"]


async def test_alerts_off_raise_nothing(mgmt: Mgmt) -> None:
    """Without ALERT_WEBHOOK_URL a burst is counted, and nothing is enqueued or kept."""
    refusals = mgmt.runtime.refusals
    assert refusals.threshold == 20  # the default (settings.management_refusal_threshold)
    for _ in range(refusals.threshold):
        await refusals.refused("address", "10.0.0.9", 401, "/x")
    await refusals.drain()
    durable = mgmt.runtime.services.redis("durable")
    assert int(durable.get(refusals.key("address", "10.0.0.9")) or 0) == 20
    assert dead_letters(durable, mgmt.runtime.cache.keys) == []
