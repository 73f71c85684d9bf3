"""cachectl rotate sentinel / sentinel-auth: three real Sentinels with ACL users over a master
with an ACL file, under traffic that discovers the master through them on every request (the
worst case: a fresh login to a Sentinel each time); no request fails."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from cache.client import connect
from cachectl.main import app as cachectl
from cachectl.rotate import Node, RotationError, can_login, node_from_url
from cachectl.rotate_sentinel import rotate_auth_pass, rotate_sentinel_password
from config import load_settings
from tests.support.redis_procs import (
    RedisProcess,
    _launch,
    _listen_directives,
    _quote,
    _render,
    start_redis,
    wait_for,
)
from tests.support.traffic import Traffic

pytestmark = pytest.mark.fault

MASTER = "rotated"
USERS = ("admin", "app", "sentinel", "sadmin", "client")


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _reply(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_reply(item) for item in value]
    if isinstance(value, dict):
        return {_reply(k): _reply(v) for k, v in value.items()}
    return value


def _as_dict(reply: list[Any] | dict[str, Any]) -> dict[str, str]:
    """A Sentinel state (redis-py parses some into dicts, typed), as text."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=True))
    return {str(k): str(v) for k, v in reply.items()}


class Deployment:
    def __init__(self, tmp_path: Path) -> None:
        self.passwords = {user: secrets.token_hex(16) for user in USERS}
        acl = tmp_path / "users.acl"
        acl.write_text(
            "user default off resetpass -@all\n"
            f"user admin on #{sha(self.passwords['admin'])} ~* &* +@all\n"
            f"user app on #{sha(self.passwords['app'])} resetkeys ~app:* +@all -@dangerous\n"
            f"user sentinel on #{sha(self.passwords['sentinel'])} resetkeys resetchannels"
            " &__sentinel__:hello -@all +multi +slaveof +ping +exec +subscribe"
            " +config|rewrite +role +publish +info +client|setname +client|kill +script|kill\n"
        )
        self.master = start_redis(aclfile=acl)
        self.sentinels: list[RedisProcess] = []

    def start_sentinels(self) -> None:
        p = self.passwords

        def render(port: int, directory: Path) -> str:
            return _render(
                [
                    *_listen_directives(port, directory, None),
                    ("user", "default off resetpass -@all"),
                    ("user", f"sadmin on #{sha(p['sadmin'])} ~* &* +@all"),
                    ("user", f"client on #{sha(p['client'])} ~* &* +@all -acl"),
                    ("sentinel sentinel-user", "client"),
                    ("sentinel sentinel-pass", _quote(p["client"])),
                    ("sentinel monitor", f"{MASTER} 127.0.0.1 {self.master.port} 2"),
                    ("sentinel auth-user", f"{MASTER} sentinel"),
                    ("sentinel auth-pass", f"{MASTER} {_quote(p['sentinel'])}"),
                    ("sentinel down-after-milliseconds", f"{MASTER} 1000"),
                ]
            )

        for _ in range(3):
            self.sentinels.append(_launch(port=None, render=render, sentinel=True))
        wait_for(
            lambda: all(len(self.peers(s)) == 2 for s in self.sentinels),
            20,
            message="peers to meet",
        )

    def admin(self, proc: RedisProcess) -> redis.Redis:
        user = "sadmin" if proc.sentinel else "admin"
        return proc.client(username=user, password=self.passwords[user])

    def ask(self, proc: RedisProcess, *args: str) -> Any:
        client = self.admin(proc)
        try:
            return _reply(client.execute_command(*args))
        finally:
            client.close()

    def peers(self, sentinel: RedisProcess) -> list[dict[str, str]]:
        return [_as_dict(item) for item in self.ask(sentinel, "SENTINEL", "SENTINELS", MASTER)]

    def nodes(self, sentinel: bool) -> list[Node]:
        procs = self.sentinels if sentinel else [self.master]
        user = "sadmin" if sentinel else "admin"
        return [
            node_from_url(proc.url, user, self.passwords[user], sentinel=sentinel, socket_timeout=5)
            for proc in procs
        ]

    def close(self) -> None:
        for proc in (*self.sentinels, self.master):
            proc.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    built = Deployment(tmp_path)
    try:
        built.start_sentinels()
        yield built
    finally:
        built.close()


class Clients(Traffic[str]):
    """Requests through the Sentinels with the password of the clients' secret store, counted
    by password."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(self.call)
        self.deployment = deployment
        self.store = {"client": deployment.passwords["client"]}

    def call(self, n: int) -> str:
        password = self.store["client"]
        settings = load_settings(
            _env_file=None,
            redis_sentinels=",".join(f"127.0.0.1:{s.port}" for s in self.deployment.sentinels),
            redis_sentinel_master=MASTER,
            redis_sentinel_username="client",
            redis_sentinel_password=password,
            redis_username="app",
            redis_password=self.deployment.passwords["app"],
            redis_socket_timeout=2.0,
            redis_connect_timeout=2.0,
        )
        clients = connect(settings)
        try:
            clients.writer.set(f"app:k{n % 50}", n)
            assert int(clients.writer.get(f"app:k{n % 50}") or -1) == n
        finally:
            clients.close()
        return password


@pytest.fixture
def traffic(deployment: Deployment) -> Iterator[Clients]:
    with Clients(deployment) as running:
        yield running


def test_sentinel_password_rotates_under_traffic(deployment: Deployment, traffic: Clients) -> None:
    old, new = deployment.passwords["client"], secrets.token_hex(16)
    traffic.served(old, 30)

    def clients_moved() -> None:
        traffic.served(old, 20)  # both accepted: the clients still log in with the old one
        traffic.store["client"] = new
        traffic.served(new, 30)

    rotate_sentinel_password(
        deployment.nodes(sentinel=True), "client", old, new, clients_moved=clients_moved
    )
    traffic.served(new, 20)
    assert traffic.failures == []
    for node in deployment.nodes(sentinel=True):
        assert not can_login(node, "client", old) and can_login(node, "client", new)
    for sentinel in deployment.sentinels:
        assert (
            _as_dict(deployment.ask(sentinel, "SENTINEL", "CONFIG", "GET", "*"))["sentinel-pass"]
            == new
        )
        text = sentinel.conf.read_text()  # SENTINEL FLUSHCONFIG kept the users and peers' secret
        assert sha(new) in text and sha(old) not in text and new in text
    # A restarted Sentinel reads the new passwords, and its peers' logins to it work.
    restarted = deployment.sentinels[0]
    restarted.restart()
    others = deployment.sentinels[1:]
    wait_for(
        lambda: all(
            any(p["port"] == str(restarted.port) for p in deployment.peers(s)) for s in others
        ),
        20,
        message="the restarted Sentinel to be known",
    )

    def seen_up() -> bool:
        # Past down-after-milliseconds (1 s), a peer that cannot log in to the restarted
        # Sentinel marks it s_down for good; one that can sees it up (a slow ping under load
        # only delays this).
        uptime = int(deployment.ask(restarted, "INFO", "server")["uptime_in_seconds"])
        return uptime >= 2 and all(
            [p["flags"] for p in deployment.peers(s) if p["port"] == str(restarted.port)]
            == ["sentinel"]
            for s in others
        )

    wait_for(seen_up, 20, message="the peers to log in to the restarted Sentinel")
    traffic.served(new, 10)
    assert traffic.failures == []


def test_sentinel_auth_pass_rotates_and_sentinels_log_in_again(
    deployment: Deployment, traffic: Clients
) -> None:
    old, new = deployment.passwords["sentinel"], secrets.token_hex(16)
    master = deployment.master

    def sentinel_links() -> int:
        listed = deployment.ask(master, "CLIENT", "LIST")
        return sum(" user=sentinel " in f" {line} " for line in listed.splitlines())

    def relogin() -> None:
        # Cut the Sentinels' links: they come back only with a password the master takes.
        deployment.ask(master, "CLIENT", "KILL", "USER", "sentinel")
        # Each Sentinel holds two links to the master: commands and the hello channel.
        wait_for(lambda: sentinel_links() >= 6, 20, message="the Sentinels to log in again")

    rotate_auth_pass(
        deployment.nodes(sentinel=False),
        deployment.nodes(sentinel=True),
        MASTER,
        "sentinel",
        old,
        new,
        clients_moved=relogin,
    )
    relogin()  # the old password is gone now: they log in with the new one

    def flags(sentinel: RedisProcess) -> str:
        return _as_dict(deployment.ask(sentinel, "SENTINEL", "MASTER", MASTER))["flags"]

    for sentinel in deployment.sentinels:
        wait_for(lambda: flags(sentinel) == "master", 20, message="a connected master, not down")
        assert new in sentinel.conf.read_text()
    assert not can_login(deployment.nodes(sentinel=False)[0], "sentinel", old)
    traffic.served(deployment.passwords["client"], 20)
    assert traffic.failures == []


def test_a_wrong_admin_or_the_same_password_changes_nothing(deployment: Deployment) -> None:
    sentinels = deployment.nodes(sentinel=True)
    client = deployment.passwords["client"]
    with pytest.raises(RotationError, match="the old one"):
        rotate_sentinel_password(sentinels, "client", client, client, clients_moved=lambda: None)
    with pytest.raises(RotationError, match="must be a Sentinel"):
        rotate_sentinel_password(
            deployment.nodes(sentinel=False), "client", client, "x" * 32, clients_moved=None
        )
    as_client = [
        node_from_url(s.url, "client", client, sentinel=True) for s in deployment.sentinels
    ]
    with pytest.raises(RotationError):
        rotate_sentinel_password(as_client, "client", client, "y" * 32, clients_moved=None)
    assert all(can_login(node, "client", client) for node in sentinels)
    assert not any(can_login(node, "client", "y" * 32) for node in sentinels)

    # The command: secrets from the environment, the Sentinels' URLs as arguments.
    urls = [s.url for s in deployment.sentinels]
    env = {
        "SENTINEL_ADMIN_PASSWORD": deployment.passwords["sadmin"],
        "SENTINEL_OLD_PASSWORD": client,
        "SENTINEL_NEW_PASSWORD": "z" * 32,
    }
    argv = ["rotate", "sentinel", "client", *urls, "--admin-user", "sadmin", "--grace-s", "0"]
    done = CliRunner().invoke(cachectl, argv, env=env)
    assert done.exit_code == 0, done.output
    assert all(can_login(node, "client", "z" * 32) for node in sentinels)
    assert not any(can_login(node, "client", client) for node in sentinels)
