"""The management API against a locked-down Redis: the production ACL users (rendered from
deploy/redis/users.acl.template) and TLS. The pickle refusal of the workers is proven in
tests/workers/test_app.py::test_pickle_message_is_refused_and_never_executed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError

from api_stub.management import PREFIX
from deploy.render import render_dir
from tests.deploy.conftest import SECRET_NAMES
from tests.management.conftest import Tokens, serve, settings_for
from tests.support.redis_procs import RedisProcess, make_tls_files, start_redis

pytestmark = [pytest.mark.fault, pytest.mark.anyio]
APP_PREFIX = "membership:"  # the template's default key prefix
DANGEROUS = (
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("GET", "not-ours:key"),
)


@pytest.fixture(scope="module")
def production_acl(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisProcess, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("deploy")
    env = {name: secrets.token_hex(24) for name in SECRET_NAMES}
    env |= {"REDIS_DATA_DIR": str(directory), "REDIS_MASTER_HOST": "127.0.0.1",
            "REDIS_MASTER_PORT": "1"}  # fmt: skip
    render_dir(directory, env)
    with start_redis(aclfile=directory / "users.acl") as proc:
        yield proc, env


async def test_management_works_as_the_app_user_who_may_not_run_dangerous_commands(
    production_acl: tuple[RedisProcess, dict[str, str]],
    database_url: str,
    broker: RedisProcess,
    tokens: Tokens,
) -> None:
    proc, env = production_acl
    password = env["REDIS_APP_PASSWORD"]
    app_user = proc.client(username="app", password=password)
    try:
        app_user.mset({f"{APP_PREFIX}member:{i}": b"m" for i in range(300)})
        for command in DANGEROUS:
            with pytest.raises((NoPermissionError, redis.ResponseError)) as refused:
                app_user.execute_command(*command)
            if command[0] != "DEBUG":  # refused to everyone before the ACL is asked
                assert isinstance(refused.value, NoPermissionError), command
        settings = settings_for(
            APP_PREFIX, database_url, broker.port, redis_port=proc.port, redis_db=0,
            redis_username="app", redis_password=password,
        )  # fmt: skip
        async with serve(settings, tokens) as mgmt:
            cleared = await mgmt.call("DELETE", f"{PREFIX}/clear", params={"pattern": "member:*"})
            assert cleared.status_code == 200 and cleared.json()["deleted"] == 300
            health = (await mgmt.call("GET", f"{PREFIX}/health")).json()["checks"]
            for check in ("redis", "replication", "memory", "writebehind"):
                assert health[check]["ok"], (check, health[check])
            metrics = (await mgmt.call("GET", f"{PREFIX}/metrics")).json()
            assert metrics["redis"]["up"] is True
        assert app_user.dbsize() >= 0  # the connection survived every refusal
    finally:
        app_user.close()


async def test_tls_works_and_plain_connections_to_the_tls_port_fail(
    tmp_path: Path, database_url: str, broker: RedisProcess, tokens: Tokens, prefix: str
) -> None:
    files = make_tls_files(tmp_path / "tls")
    with start_redis(tls=files) as proc:
        plain = redis.Redis(host="127.0.0.1", port=proc.port, socket_timeout=2)
        try:
            with pytest.raises(redis.ConnectionError):
                plain.ping()
        finally:
            plain.close()
        settings = settings_for(
            prefix, database_url, broker.port,
            redis_url=f"rediss://127.0.0.1:{proc.port}/0",
            redis_tls_ca_file=str(files.ca_cert), redis_tls_cert_file=str(files.client_cert),
            redis_tls_key_file=str(files.client_key), redis_socket_timeout=2,
        )  # fmt: skip
        client = proc.client()
        try:
            client.mset({f"{prefix}lookup:{i}": b"l" for i in range(10)})
        finally:
            client.close()
        async with serve(settings, tokens) as mgmt:
            answer = await mgmt.call("DELETE", f"{PREFIX}/clear", params={"pattern": "lookup:*"})
            assert answer.status_code == 200 and answer.json()["deleted"] == 10
            nodes = (await mgmt.call("GET", f"{PREFIX}/health")).json()["checks"]["redis"]
            assert nodes["ok"] is True
