"""Tokens and roles: the auth matrix over every management endpoint, and the token table."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import pytest

from api_stub.management import PREFIX, Role, TokenTable, hash_token
from api_stub.management.auth import MAX_TOKEN_CHARS
from api_stub.problems import UNAUTHENTICATED
from tests.management.conftest import Mgmt

pytestmark = pytest.mark.anyio

CALLERS = ("none", "wrong", "viewer", "operator", "admin")
RANK = {"viewer": 1, "operator": 2, "admin": 3}

# (method, path, request, least role, answer when allowed). Health is 503 here: no worker
# consumes this session's broker and no beat runs, and the answer names both.
ENDPOINTS: list[tuple[str, str, dict[str, Any], str, int]] = [
    ("GET", "/health", {}, "viewer", 503),
    ("GET", "/metrics", {}, "viewer", 200),
    ("GET", "/metrics/history", {}, "viewer", 200),
    ("GET", "/kinds", {}, "viewer", 200),
    ("GET", "/prometheus", {}, "viewer", 200),
    ("GET", "/reports", {}, "viewer", 200),
    ("GET", "/dead-letters", {}, "viewer", 200),
    ("GET", "/warmup/current", {}, "viewer", 200),
    ("GET", "/warmup/{task_id}", {}, "viewer", 200),
    ("POST", "/warmup", {"json": {"kind": "lookup"}}, "operator", 202),
    ("POST", "/invalidation/trigger", {"json": {"tags": ["analytics"]}}, "operator", 202),
    ("POST", "/dead-letters/replay", {"json": {"ids": ["1-1"]}}, "operator", 200),
    ("DELETE", "/clear", {"params": {"pattern": "member:*", "dry_run": "true"}}, "admin", 200),
    ("GET", "/audit", {}, "admin", 200),
    ("GET", "/tokens", {}, "admin", 200),
    ("POST", "/tokens", {"json": {"role": "viewer", "label": "matrix"}}, "admin", 201),
    ("DELETE", "/tokens/{label}", {}, "admin", 404),  # an unknown label
]


def expected(caller: str, least: str, allowed: int) -> int:
    if caller in ("none", "wrong"):
        return 401
    return allowed if RANK[caller] >= RANK[least] else 403


async def test_the_matrix_covers_every_management_route(mgmt: Mgmt) -> None:
    routes = {
        (method.upper(), path.removeprefix(PREFIX))
        for path, operations in mgmt.app.openapi()["paths"].items()
        if path.startswith(PREFIX)
        for method in operations
    }
    assert routes == {(method, path) for method, path, *_ in ENDPOINTS}


async def test_auth_matrix(mgmt: Mgmt) -> None:
    seen: dict[tuple[str, str, str], int] = {}
    for method, path, request, least, allowed in ENDPOINTS:
        url = PREFIX + path.replace("{task_id}", secrets.token_hex(8))
        url = url.replace("{label}", secrets.token_hex(8))
        for caller in CALLERS:
            answer = await mgmt.call(method, url, None if caller == "none" else caller, **request)
            seen[(method, path, caller)] = answer.status_code
            if answer.status_code == 401:
                challenge = answer.headers["www-authenticate"]
                assert challenge.startswith('Bearer realm="cache-management"')
                assert ('error="invalid_token"' in challenge) == (caller == "wrong")
    wanted = {
        (method, path, caller): expected(caller, least, allowed)
        for method, path, _request, least, allowed in ENDPOINTS
        for caller in CALLERS
    }
    assert seen == wanted


async def test_refusals_of_actions_are_audited_with_the_token_id(mgmt: Mgmt) -> None:
    answer = await mgmt.call("DELETE", f"{PREFIX}/clear", "operator", params={"pattern": "x:*"})
    assert answer.status_code == 403
    entries = (await mgmt.call("GET", f"{PREFIX}/audit", "admin")).json()["entries"]
    refused = entries[0]
    assert refused["who"] == "operator-test" and refused["role"] == "operator"
    assert refused["action"] == "cache.clear" and refused["status"] == 403
    assert refused["arguments"]["query"] == {"pattern": "x:*"}


@pytest.mark.parametrize(
    "header",
    [
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer ",
        "bearer " + "x" * (MAX_TOKEN_CHARS + 1),
        "Token abc",
    ],
)
async def test_malformed_or_oversized_authorization_is_401(mgmt: Mgmt, header: str) -> None:
    answer = await mgmt.call("GET", f"{PREFIX}/metrics", None, headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith('Bearer realm="cache-management"')
    problem = answer.json()
    assert (problem["type"], problem["status"]) == (UNAUTHENTICATED.type, 401)
    assert problem["instance"] == f"{PREFIX}/metrics"


async def test_an_oversized_token_of_the_right_digest_is_still_refused() -> None:
    long_token = "a" * (MAX_TOKEN_CHARS + 1)
    table = TokenTable.parse(f"admin:{hash_token(long_token)}")
    assert table.authenticate(long_token) is None


def test_token_table_maps_tokens_to_principals() -> None:
    tokens = {role: secrets.token_urlsafe(32) for role in ("viewer", "operator", "admin")}
    table = TokenTable.parse(
        f"viewer:{hash_token(tokens['viewer'])}, OPERATOR:{hash_token(tokens['operator'])}:ops,"
        f"admin:{hash_token(tokens['admin']).upper()}:root"
    )
    assert len(table) == 3
    viewer = table.authenticate(tokens["viewer"])
    assert viewer is not None
    assert viewer.role is Role.VIEWER
    assert viewer.id == f"viewer-{hash_token(tokens['viewer'])[:8]}"
    assert table.authenticate(tokens["operator"]) == table.authenticate(tokens["operator"])
    assert table.authenticate(tokens["admin"]).id == "root"  # type: ignore[union-attr]
    assert table.authenticate("not a configured token") is None
    assert table.authenticate("") is None
    assert table.authenticate(None) is None
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN


def test_an_empty_configuration_admits_nobody() -> None:
    assert TokenTable.parse("").authenticate("anything") is None


@pytest.mark.parametrize(
    "text",
    [
        "root:" + "a" * 64,  # unknown role
        "admin:" + "a" * 63,  # not a digest
        "admin:" + "g" * 64,
        "admin",
        "admin:" + "a" * 64 + ":bad label",
        "admin:" + "a" * 64 + ":x:y",
        "admin:" + "a" * 64 + ",viewer:" + "a" * 64,  # one digest, two roles
        "admin:" + "a" * 64 + ":same,viewer:" + "b" * 64 + ":same",
    ],
)
def test_bad_token_configuration_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match="token entry") as caught:
        TokenTable.parse(text)
    assert "a" * 63 not in str(caught.value)


def test_configured_values_are_sha256_digests_of_the_tokens() -> None:
    assert hash_token("s3cret") == hashlib.sha256(b"s3cret").hexdigest()
