"""The ACL users of deploy/redis/users.acl.template, enforced by a real redis-server.

The master runs from the rendered redis-master.conf, which loads the rendered users.acl: what
is allowed and refused here is what production allows and refuses.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from redis.exceptions import NoPermissionError

import celeryconfig
from cache import MISS, build_cache
from cache.keys import Keys
from config import load_settings
from tests.deploy.conftest import PREFIX, Deployment, command
from tests.support.redis_procs import HOST, RedisProcess, wait_for
from workers import routing

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parents[2]
# redis-py raises NoPermissionError for the server's NOPERM reply and keeps only its text.
NOPERM = "(?i)no permissions"
DENIED_TO_APPS = (
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "0"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("MONITOR",),
    ("REPLICAOF", "NO", "ONE"),
    ("ACL", "LIST"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
)


def acl_denials(deployment: Deployment, proc: RedisProcess, user: str) -> list[dict[str, object]]:
    client = deployment.client(proc)
    try:
        entries = client.acl_log()
    finally:
        client.close()
    return [entry for entry in entries if entry.get("username") == user]


@pytest.fixture
def app_client(deployment: Deployment, master: RedisProcess) -> Iterator[redis.Redis]:
    client = deployment.client(master, "app")
    yield client
    client.close()


def test_the_app_user_reads_and_writes_under_the_prefix(app_client: redis.Redis) -> None:
    assert app_client.set(f"{PREFIX}member:1", b"one", ex=60)
    assert app_client.get(f"{PREFIX}member:1") == b"one"
    assert app_client.xadd(Keys(PREFIX).writebehind("stream"), {"member": "1"})
    assert app_client.unlink(f"{PREFIX}member:1") == 1
    assert "used_memory" in app_client.info("memory")  # the health endpoint reads INFO


def assert_denied(deployment: Deployment, master: RedisProcess, user: str) -> None:
    """Each server-wide command: the ACL verdict (ACL DRYRUN) and the refusal of a real call."""
    admin = deployment.client(master)
    client = deployment.client(master, user)
    try:
        for args in DENIED_TO_APPS:
            verdict = command(admin, "ACL", "DRYRUN", user, *args)
            assert b"no permissions" in verdict, (user, args, verdict)
            # DEBUG is refused to everyone (enable-debug-command no) before the ACL is asked.
            refused = redis.ResponseError if args[0] == "DEBUG" else NoPermissionError
            with pytest.raises(refused):
                command(client, *args)
    finally:
        admin.close()
        client.close()


def test_the_app_user_is_denied_server_wide_commands(
    deployment: Deployment, master: RedisProcess
) -> None:
    assert_denied(deployment, master, "app")


def test_the_app_user_is_denied_keys_and_channels_outside_the_prefix(
    app_client: redis.Redis,
) -> None:
    for args in (
        ("GET", "other:key"),
        ("SET", "cache.warmup", "x"),
        ("LPUSH", "cache.warmup", "x"),
        ("DEL", "unacked"),
        ("PUBLISH", "other-channel", "x"),
    ):
        with pytest.raises(NoPermissionError, match=NOPERM):
            command(app_client, *args)


def test_the_default_user_is_refused(deployment: Deployment, master: RedisProcess) -> None:
    anonymous = master.client()
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.get(f"{PREFIX}member:1")
    finally:
        anonymous.close()
    for password in ("", "nopass", deployment.password("admin")):
        guess = master.client(username="default", password=password or None)
        try:
            with pytest.raises(redis.AuthenticationError):
                guess.ping()
        finally:
            guess.close()
    admin = deployment.client(master)
    try:
        flags = admin.acl_getuser("default")["flags"]
    finally:
        admin.close()
    # Off, and not passwordless: protected mode stays in force should it ever be turned on.
    assert "off" in flags
    assert "nopass" not in flags


def test_service_users_can_do_only_their_job(deployment: Deployment, master: RedisProcess) -> None:
    for user in ("replication", "sentinel", "healthcheck"):
        client = deployment.client(master, user)
        try:
            assert client.ping()
            with pytest.raises(NoPermissionError):
                client.get(f"{PREFIX}member:1")
            with pytest.raises(NoPermissionError):
                client.flushall()
        finally:
            client.close()
    assert deployment.replication(master)["role"] == "master"


def test_the_worker_user_is_denied_server_wide_commands(
    deployment: Deployment, master: RedisProcess
) -> None:
    assert_denied(deployment, master, "worker")
    client = deployment.client(master, "worker")
    try:
        with pytest.raises(NoPermissionError, match=NOPERM):
            client.get("other:key")
    finally:
        client.close()


def test_the_acl_file_holds_no_clear_password(deployment: Deployment) -> None:
    text = deployment.acl_file.read_text()
    for name, value in deployment.env.items():
        assert value not in text, name
    assert "#" in text and ">" not in text


def test_the_cache_core_runs_under_the_app_user(
    deployment: Deployment, master: RedisProcess
) -> None:
    settings = load_settings(
        redis_host=HOST,
        redis_port=master.port,
        redis_username="app",
        redis_password=deployment.password("app"),
        redis_key_prefix=PREFIX,
        redis_socket_timeout=2.0,
        redis_connect_timeout=2.0,
        **deployment.tls_settings(),
        _env_file=None,
    )
    cache = build_cache(settings)
    try:
        key = cache.keys.member(42)
        assert cache.get_or_load(key, lambda: {"id": 42}) == {"id": 42}
        assert cache.get(key) == {"id": 42}
        assert cache.write_through(key, {"id": 42, "v": 2}, version=2)
        assert cache.delete(key) == 1
        assert cache.get(key) is MISS
        assert cache.metrics.snapshot()["total"]["errors"] == 0
    finally:
        cache.close()
    assert acl_denials(deployment, master, "app") == []


def worker_settings_env(deployment: Deployment, master: RedisProcess) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REDIS_", "CELERY_", "CACHE_", "DATABASE_"))
    }
    env.update(
        REDIS_HOST=HOST,
        REDIS_PORT=str(master.port),
        REDIS_USERNAME="worker",
        REDIS_PASSWORD=deployment.password("worker"),
        REDIS_KEY_PREFIX=PREFIX,
        REDIS_SOCKET_TIMEOUT="2",
        REDIS_CONNECT_TIMEOUT="2",
        **deployment.tls_env(),
    )
    return env


@pytest.mark.slow
def test_a_celery_worker_runs_under_the_worker_user(
    deployment: Deployment, master: RedisProcess, tmp_path: Path
) -> None:
    """Queues, acks, results, remote control and events, all as the ``worker`` user.

    This is what the worker, beat and Flower do: consume and ack (unacked sets, bindings),
    store and publish results, answer ``inspect ping`` (pidbox), and stream events.
    """
    env = worker_settings_env(deployment, master)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.deploy.celery_probe",
                "worker",
                "-Q",
                ",".join(routing.QUEUES),
                "-P",
                "solo",
                "-n",
                f"acl-probe-{master.port}@%h",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    settings = load_settings(
        redis_host=HOST,
        redis_port=master.port,
        redis_username="worker",
        redis_password=deployment.password("worker"),
        redis_key_prefix=PREFIX,
        **deployment.tls_settings(),
        _env_file=None,
    )
    app = Celery("acl_probe_client", set_as_current=False)
    app.conf.update(celeryconfig.from_settings(settings))
    # The master speaks TLS only: broker and results ride rediss:// with the deploy's CA.
    assert app.conf.broker_url.startswith("rediss://worker:")
    assert app.conf.result_backend.startswith("rediss://worker:")
    try:
        replies = wait_for(
            lambda: app.control.inspect(timeout=1.0).ping(),
            60,
            0.5,
            message=f"the probe worker to answer ping; log:\n{log.read_text(errors='replace')}",
        )
        assert all(reply == {"ok": "pong"} for reply in replies.values())
        results = [
            app.send_task("acl_probe.touch_cache", args=[number], queue=queue)
            for number, queue in enumerate(routing.QUEUES, 1)
        ]
        assert [result.get(timeout=30) for result in results] == [True] * len(results)
        # Flower's view: the event stream. One subscription for the whole wait: kombu
        # subscribes on the first drain, and a heartbeat asked for (wakeup) before that is
        # published to nobody; over TLS a new subscription's handshake makes that likely.
        events: list[dict[str, object]] = []
        with app.connection() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": events.append})
            with receiver.consumer_context(wakeup=False) as (consuming, channel, _):
                deadline = time.monotonic() + 15
                while not events and time.monotonic() < deadline:
                    receiver.wakeup_workers(channel=channel)  # answered with a heartbeat
                    with contextlib.suppress(TimeoutError):
                        consuming.drain_events(timeout=1)
        assert any(event.get("type") == "worker-heartbeat" for event in events)
    finally:
        app.close()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    admin = deployment.client(master)
    try:
        assert admin.exists(*(f"{PREFIX}member:{n}" for n in range(1, 6))) == 5
    finally:
        admin.close()
    assert acl_denials(deployment, master, "worker") == [], log.read_text(errors="replace")
