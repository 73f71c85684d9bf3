"""Management tokens added and revoked with no restart, across two real API processes under
traffic (``cachectl tokens`` against one of them): a new token works at once on the other,
a revoked one is refused at once on both, and the clients switching over see no failure."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api_stub.management import Role, TokenTable, hash_token
from api_stub.management.tokens import TokenStore, TokenStoreUnavailable
from cache.client import connect_async
from cache.keys import Keys
from cachectl.main import app as cachectl
from config import load_settings
from tests.conftest import TEST_REDIS_DB
from tests.management.conftest import Tokens
from tests.support.api_process import ApiProcess
from tests.support.redis_procs import RedisProcess, free_port

pytestmark = pytest.mark.slow

KINDS = "/api/v1/cache/kinds"


@pytest.fixture
def two_apis(
    prefix: str, database_url: str, broker: RedisProcess, tokens: Tokens, tmp_path: Path
) -> Iterator[list[str]]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_DB": str(TEST_REDIS_DB),
        "REDIS_KEY_PREFIX": prefix,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{broker.port}/1",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{broker.port}/2",
        "MANAGEMENT_TOKENS": tokens.configured,
        "MANAGEMENT_RATE_LIMIT": "1000000",
        "CACHE_AUTOWARM": "false",
    }
    apis = [ApiProcess(env, tmp_path / f"api{n}") for n in range(2)]
    try:
        for api in apis:
            api.start()
        yield [api.base_url for api in apis]
    finally:
        for api in apis:
            api.stop()


def _status(base: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(base + KINDS, headers=headers, timeout=10).status_code


def _cachectl(base: str, admin: str, *args: str) -> str:
    result = CliRunner().invoke(
        cachectl, [*args, "--api", base], env={"CACHECTL_TOKEN": admin}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_tokens_rotate_across_processes_under_traffic(two_apis: list[str], tokens: Tokens) -> None:
    a, b = two_apis
    admin = tokens.clear["admin"]
    first = _cachectl(a, admin, "tokens", "add", "client-1", "--role", "viewer").split()[-1]
    # Added through A, it works on B from the very next request.
    assert _status(b, first) == 200

    current = {"token": first}
    used: dict[str, set[str]] = {first: set()}
    moved: set[int] = set()  # clients whose requests all carry the new token by now
    served = {"after": 0}
    failures: list[str] = []
    stop = threading.Event()

    def client(number: int) -> None:
        # A client of both processes, reading its token from its secret store per request.
        for base in itertools.cycle((a, b)):
            if stop.is_set():
                return
            token = current["token"]
            status = _status(base, token)
            if status != 200:
                failures.append(f"{base}: {status}")
                continue
            used.setdefault(token, set()).add(base)
            if token != first:
                moved.add(number)
                served["after"] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        second = _cachectl(b, admin, "tokens", "add", "client-2", "--role", "viewer").split()[-1]
        assert _status(a, second) == 200
        current["token"] = second  # the clients move; requests already sent still carry `first`
        _wait(lambda: used.get(second) == {a, b} and moved == {0, 1}, "the clients to move")
        # Revoked through B: refused on both from the next request, with no wait.
        _cachectl(b, admin, "tokens", "revoke", "client-1")
        assert [_status(a, first), _status(b, first)] == [401, 401]
        after = served["after"]
        _wait(lambda: served["after"] >= after + 20, "20 more requests with the new token")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == []

    # A bootstrap token (MANAGEMENT_TOKENS) is revoked the same way, with no restart.
    _cachectl(a, admin, "tokens", "revoke", "viewer-test")
    assert [_status(a, tokens.clear["viewer"]), _status(b, tokens.clear["viewer"])] == [401, 401]
    assert _status(b, tokens.clear["operator"]) == 200

    listed = httpx.get(f"{a}/api/v1/cache/tokens", headers=tokens.headers("admin"), timeout=10)
    by_label = {item["label"]: item for item in listed.json()["tokens"]}
    assert by_label["client-1"]["revoked_at"] and by_label["client-1"]["revoked_by"] == "admin-test"
    assert by_label["client-2"]["revoked_at"] is None
    assert (
        by_label["viewer-test"]["source"] == "bootstrap" and by_label["viewer-test"]["revoked_at"]
    )
    audit = httpx.get(f"{b}/api/v1/cache/audit", headers=tokens.headers("admin"), timeout=10)
    ours = {"client-1", "client-2", "viewer-test"}  # the session's audit trail has others'
    actions = sorted(
        (e["action"], e["arguments"]["label"], e["status"])
        for e in audit.json()["entries"]
        if e["action"].startswith("token.") and e["arguments"].get("label") in ours
    )
    assert actions == [
        ("token.add", "client-1", 201),
        ("token.add", "client-2", 201),
        ("token.revoke", "client-1", 200),
        ("token.revoke", "viewer-test", 200),
    ]
    assert first not in listed.text + audit.text and second not in listed.text + audit.text
    # A label in use is refused, and the refusal changes nothing.
    taken = httpx.post(
        f"{a}/api/v1/cache/tokens",
        json={"role": "admin", "label": "client-2"},
        headers=tokens.headers("admin"),
        timeout=10,
    )
    assert taken.status_code == 409 and _status(a, second) == 200
    ghost = f"ghost-{time.time_ns()}"
    unknown = httpx.delete(
        f"{a}/api/v1/cache/tokens/{ghost}", headers=tokens.headers("admin"), timeout=10
    )
    assert unknown.status_code == 404 and ghost in unknown.json()["detail"]
    # Both refusals are in the audit trail with their answer.
    audit = httpx.get(f"{b}/api/v1/cache/audit", headers=tokens.headers("admin"), timeout=10)
    refused = {
        (e["action"], e["arguments"].get("label"), e["status"])
        for e in audit.json()["entries"]
        if e["action"].startswith("token.") and e["status"] >= 400
    }
    assert {("token.add", "client-2", 409), ("token.revoke", ghost, 404)} <= refused


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.anyio
async def test_without_redis_bootstrap_tokens_work_and_stored_ones_are_unavailable(
    prefix: str,
) -> None:
    boot = "bootstrap-" + "x" * 20
    settings = load_settings(_env_file=None, redis_host="127.0.0.1", redis_port=free_port())
    clients = connect_async(settings)
    store = TokenStore(
        TokenTable.parse(f"admin:{hash_token(boot)}:root"), clients.writer, Keys(prefix)
    )
    try:
        who = await store.authenticate(boot)
        assert who is not None and (who.id, who.role) == ("root", Role.ADMIN)
        with pytest.raises(TokenStoreUnavailable):
            await store.authenticate("some-added-token")
        assert await store.authenticate("") is None
    finally:
        await clients.close()
