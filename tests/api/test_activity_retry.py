"""A retried activity POST after a cut connection, against a real API process: with an
Idempotency-Key it counts once in PostgreSQL after the flush; without one it counts twice.

The client sends the request and waits (with a deadline) until the server has recorded it,
then resets the connection without reading the answer: it never learns it was accepted,
so it retries, as a client behind a dropped connection does.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tests.api.conftest import api_settings_for
from tests.api.test_activity import _checkins, _drain, _member
from tests.conftest import TEST_REDIS_DB
from tests.support.api_process import ApiProcess

TIMES = 3


@pytest.fixture
def api_process(prefix: str, database_url: str, tmp_path: Path) -> Iterator[ApiProcess]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_DB": str(TEST_REDIS_DB),
        "REDIS_KEY_PREFIX": prefix,
        "CACHE_AUTOWARM": "false",
    }
    api = ApiProcess(env, tmp_path / "api").start()
    try:
        yield api
    finally:
        api.stop()


def _checked_in(api: ApiProcess, member_id: int) -> int:
    """The member's check-ins in the cached counters (what the API counted at once)."""
    found = httpx.get(f"{api.base_url}/api/v1/members/{member_id}/activity", timeout=5).json()
    return sum(int(day["checkin"]) for day in found["days"])


def _post_then_cut(api: ApiProcess, member_id: int, headers: dict[str, str]) -> None:
    """Send the POST, wait until the server counted it, reset the connection unread."""
    before = _checked_in(api, member_id)
    body = json.dumps({"kind": "checkin", "times": TIMES}).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST /api/v1/members/{member_id}/activity HTTP/1.1\r\nHost: api\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    try:
        sock.sendall(request)
        deadline = time.monotonic() + 15
        while _checked_in(api, member_id) < before + TIMES:
            assert time.monotonic() < deadline, f"not recorded:\n{api.log()[-2000:]}"
            time.sleep(0.02)
    finally:
        # SO_LINGER 0: close sends a reset, the answer is never read.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@pytest.mark.parametrize(("key", "counted"), [("visit-2026-12-06-door-3", 1), (None, 2)])
def test_a_retry_after_a_cut_connection_counts_once_with_a_key(
    api_process: ApiProcess,
    engine: Engine,
    prefix: str,
    database_url: str,
    key: str | None,
    counted: int,
) -> None:
    member_id = _member(engine, 10 if key else 11)
    settings = api_settings_for(prefix, database_url)
    before = _checkins(engine, member_id)
    headers = {"Idempotency-Key": key} if key else {}

    _post_then_cut(api_process, member_id, headers)
    retry = httpx.post(
        f"{api_process.base_url}/api/v1/members/{member_id}/activity",
        json={"kind": "checkin", "times": TIMES},
        headers=headers,
        timeout=10,
    )
    assert retry.status_code == 202, retry.text
    assert retry.json()["accepted"] == 1

    _drain(settings, engine)  # what the flush worker does
    assert _checkins(engine, member_id) - before == counted * TIMES
