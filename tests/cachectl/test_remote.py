"""cachectl's management-API commands against a running API: output and exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner, Result

from api_stub.management import hash_token
from cache.writebehind import ActivityEvent
from cachectl.main import app
from tests.cachectl.conftest import RunningApi
from tests.conftest import TEST_REDIS_DB
from tests.support.redis_procs import start_redis

REPO = Path(__file__).resolve().parents[2]


def run(
    api: RunningApi | None, *args: str, role: str = "admin", input: str | None = None
) -> Result:
    env = {"COLUMNS": "200"} | (api.env(role) if api else {})
    where = ["--api", api.url] if api else []
    return CliRunner().invoke(app, [*args, *where], env=env, input=input)


@pytest.fixture
def shared(prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    yield client
    client.close()


def test_health_reports_failing_checks_and_exits_1(running_api: RunningApi) -> None:
    # No worker and no beat run beside this API: unhealthy, whatever Redis and the DB say.
    shown = run(running_api, "health")
    assert shown.exit_code == 1, shown.output
    assert "redis" in shown.stdout and "workers" in shown.stdout
    assert "unhealthy" in shown.stderr
    as_json = run(running_api, "health", "--json")
    assert as_json.exit_code == 1
    answer = json.loads(as_json.stdout)
    assert answer["status"] == "failing"
    assert answer["checks"]["redis"]["ok"] is True
    assert "workers" in answer["failing"]


def test_metrics(running_api: RunningApi) -> None:
    shown = run(running_api, "metrics", role="viewer")
    assert shown.exit_code == 0, shown.output
    assert "hit rate" in shown.stdout and "used_memory" in shown.stdout
    answer = json.loads(run(running_api, "metrics", "--json", role="viewer").stdout)
    assert answer["redis"]["up"] is True
    assert "overall" in answer and "writebehind" in answer


def test_clear_counts_asks_and_deletes(
    running_api: RunningApi, prefix: str, shared: redis.Redis
) -> None:
    for n in range(3):
        shared.set(f"{prefix}member:{n}", "x")
    shared.set(f"{prefix}lookup:1", "kept")

    dry = run(running_api, "clear", "member:*", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "3 keys match 'member:*' (dry run)" in dry.stdout
    assert shared.exists(*(f"{prefix}member:{n}" for n in range(3))) == 3

    declined = run(running_api, "clear", "member:*", input="n\n")
    assert declined.exit_code == 1
    assert "3 keys match" in declined.stdout and "aborted" in declined.stderr
    assert shared.exists(*(f"{prefix}member:{n}" for n in range(3))) == 3

    confirmed = run(running_api, "clear", "member:*", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "deleted 3 keys matching 'member:*'" in confirmed.stdout
    assert shared.exists(*(f"{prefix}member:{n}" for n in range(3))) == 0
    assert shared.get(f"{prefix}lookup:1") == b"kept"

    scripted = run(running_api, "clear", "lookup:*", "--yes", "--json")
    assert scripted.exit_code == 0, scripted.output
    assert json.loads(scripted.stdout)["deleted"] == 1


@pytest.mark.parametrize("pattern", ["member:[ab]", "sys:*", "member :*"])
def test_clear_refused_pattern_is_a_usage_error(running_api: RunningApi, pattern: str) -> None:
    refused = run(running_api, "clear", pattern, "--yes")
    assert refused.exit_code == 2
    assert "refused the request (422)" in refused.stderr


def test_clear_needs_the_admin_role(running_api: RunningApi) -> None:
    refused = run(running_api, "clear", "member:*", "--yes", role="operator")
    assert refused.exit_code == 2
    assert "(403)" in refused.stderr


def test_invalidate(running_api: RunningApi) -> None:
    by_tag = run(running_api, "invalidate", "--tag", "members", "--json", role="operator")
    assert by_tag.exit_code == 0, by_tag.output
    assert json.loads(by_tag.stdout)["tags"] == ["members"]

    by_member = run(running_api, "invalidate", "--member", "1", "--member", "2", role="operator")
    assert by_member.exit_code == 0, by_member.output
    assert "invalidation by member_ids" in by_member.stdout

    by_type = run(running_api, "invalidate", "--data-type", "lookup", "--json", role="operator")
    assert by_type.exit_code == 0, by_type.output
    assert json.loads(by_type.stdout)["accepted"] == "data_type"

    assert run(running_api, "invalidate", role="operator").exit_code == 2
    both = run(running_api, "invalidate", "--tag", "members", "--data-type", "lookup")
    assert both.exit_code == 2 and "exactly one" in both.stderr
    unknown = run(running_api, "invalidate", "--data-type", "sys", role="operator")
    assert unknown.exit_code == 2 and "(422)" in unknown.stderr


def test_reports(running_api: RunningApi) -> None:
    shown = run(running_api, "reports", role="viewer")
    assert shown.exit_code == 0, shown.output
    assert "reports" in shown.stdout
    assert isinstance(json.loads(run(running_api, "reports", "--json").stdout)["reports"], list)
    bad = run(running_api, "reports", "--job", "nonsense", role="viewer")
    assert bad.exit_code == 2 and "job: Input should be 'daily_report'" in bad.stderr


def test_dead_letters_list_and_replay(running_api: RunningApi) -> None:
    wb = running_api.app.state.management.runtime.writebehind
    wb.ensure_group()
    wb.record([ActivityEvent(7, "login"), ActivityEvent(8, "checkin")])
    batch = wb.read_batch("test-consumer", 10)
    wb.dead_letter([event.id for event in batch.events], "row can never be written")

    listed = run(running_api, "dead-letters", "--json", role="viewer")
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.stdout)["dead_letters"]
    assert {letter["m"] for letter in letters} == {"7", "8"}
    table = run(running_api, "dead-letters", "list", role="viewer")
    assert table.exit_code == 0 and "2 dead letters" in table.stdout

    first = letters[0]["dead_id"]
    replayed = run(running_api, "dead-letters", "replay", first, role="operator")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 of 1 dead letters" in replayed.stdout
    assert wb.health().dead_letters == 1

    gone = run(running_api, "dead-letters", "replay", first, "--json", role="operator")
    assert gone.exit_code == 1 and json.loads(gone.stdout)["replayed"] == 0
    assert run(running_api, "dead-letters", "replay", "0-0 OR 1").exit_code == 2
    assert run(running_api, "dead-letters", "replay").exit_code == 2
    assert run(running_api, "dead-letters", "frob").exit_code == 2


def test_token_problems_are_usage_errors(running_api: RunningApi) -> None:
    missing = CliRunner().invoke(app, ["metrics", "--api", running_api.url], env={})
    assert missing.exit_code == 2 and "CACHECTL_TOKEN" in missing.stderr
    wrong = run(running_api, "metrics", "--token", secrets.token_urlsafe(32))
    assert wrong.exit_code == 2 and "refused the token (401)" in wrong.stderr


def test_unreachable_api_exits_1() -> None:
    from tests.cachectl.conftest import _free_port

    url = f"http://127.0.0.1:{_free_port()}"
    down = CliRunner().invoke(app, ["health", "--api", url, "--token", "t"])
    assert down.exit_code == 1
    assert f"cannot connect to the API at {url}" in down.stderr


def test_entry_point_in_a_process(running_api: RunningApi) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cachectl.main", "reports", "--json", "--api", running_api.url],
        env={"PATH": os.environ["PATH"], **running_api.env("viewer")},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reports"] == []


def test_hash_token() -> None:
    token = secrets.token_urlsafe(32)
    shown = CliRunner().invoke(app, ["hash-token"], input=token + "\n")
    assert shown.exit_code == 0
    assert shown.stdout.strip() == hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    empty = CliRunner().invoke(app, ["hash-token"], input="")
    assert empty.exit_code == 2


def test_rotate_password_without_secrets_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_ADMIN_PASSWORD", "REDIS_OLD_PASSWORD", "REDIS_NEW_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    failed = CliRunner().invoke(app, ["rotate-password", "app", "redis://127.0.0.1:1"])
    assert failed.exit_code == 1
    assert "REDIS_ADMIN_PASSWORD is not set" in failed.stderr


def test_rotate_password(tmp_path: Path) -> None:
    def sha(password: str) -> str:
        return hashlib.sha256(password.encode()).hexdigest()

    admin, old, new = (secrets.token_hex(16) for _ in range(3))
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off resetpass -@all\n"
        f"user admin on #{sha(admin)} ~* &* +@all\n"
        f"user app on #{sha(old)} resetkeys ~app:* +@all -@dangerous\n"
    )
    with start_redis(aclfile=acl) as proc:
        env = {"REDIS_ADMIN_PASSWORD": admin, "REDIS_OLD_PASSWORD": old, "REDIS_NEW_PASSWORD": new}
        args = ["rotate-password", "app", proc.url, "--grace-s", "0"]
        done = CliRunner().invoke(app, args, env=env)
        assert done.exit_code == 0, done.output
        assert "rotated app's password on 1 node(s)" in done.stdout
        client = proc.client(username="app", password=new)
        try:
            assert client.ping()
        finally:
            client.close()
        with pytest.raises(redis.AuthenticationError):
            proc.client(username="app", password=old).ping()
