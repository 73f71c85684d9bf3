"""cachectl rotate-password: a user's password changes while its traffic runs, and no request
fails (a real redis-server with an ACL file)."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachectl.rotate import (
    Node,
    RotationError,
    can_login,
    node_from_url,
    remove_password,
    rotate_password,
)
from tests.support.redis_procs import RedisProcess, start_redis

pytestmark = pytest.mark.fault


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[tuple[RedisProcess, Path, dict[str, str]]]:
    passwords = {"admin": secrets.token_hex(16), "app": secrets.token_hex(16)}
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off resetpass -@all\n"
        f"user admin on #{sha(passwords['admin'])} ~* &* +@all\n"
        f"user app on #{sha(passwords['app'])} resetkeys ~app:* +@all -@dangerous\n"
    )
    with start_redis(aclfile=acl) as proc:
        yield proc, acl, passwords


def test_rotation_under_traffic_loses_no_request(
    acl_server: tuple[RedisProcess, Path, dict[str, str]],
) -> None:
    proc, acl, passwords = acl_server
    old, new = passwords["app"], secrets.token_hex(16)
    node = node_from_url(proc.url, "admin", passwords["admin"], socket_timeout=5)
    store = {"password": old}  # the clients' secret store; read at every (re)connect
    stop = threading.Event()
    failures: list[str] = []
    done = {"old": 0, "new": 0}

    def traffic() -> None:
        # Long-lived pooled connections stay logged in; new ones log in with the current
        # secret. One fresh connection per request is the worst case for a rotation.
        n = 0
        while not stop.is_set():
            password = store["password"]
            client = proc.client(username="app", password=password, socket_timeout=5)
            try:
                client.set(f"app:k{n % 100}", n)
                assert int(client.get(f"app:k{n % 100}") or -1) == n
                done["old" if password == old else "new"] += 1
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                client.close()
            n += 1

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        time.sleep(0.3)

        def clients_moved() -> None:
            time.sleep(0.3)  # both passwords valid: traffic goes on with the old one
            store["password"] = new
            seen = done["new"]
            deadline = time.monotonic() + 10
            while done["new"] < seen + 50 and time.monotonic() < deadline:
                time.sleep(0.01)

        rotate_password([node], "app", old, new, clients_moved=clients_moved)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(10)
        node.admin.close()
    assert failures == []
    assert done["old"] > 50 and done["new"] > 50
    assert not can_login(node_from_url(proc.url, "admin", passwords["admin"]), "app", old)
    text = acl.read_text()  # ACL SAVE persisted the change
    assert sha(new) in text and sha(old) not in text
    assert new not in text


def test_the_only_password_is_never_removed(
    acl_server: tuple[RedisProcess, Path, dict[str, str]],
) -> None:
    proc, _acl, passwords = acl_server
    node: Node = node_from_url(proc.url, "admin", passwords["admin"])
    try:
        with pytest.raises(RotationError, match="only password"):
            remove_password([node], "app", passwords["app"])
        with pytest.raises(RotationError, match="no ACL user"):
            rotate_password([node], "ghost", "a", "b", clients_moved=lambda: None)
        assert can_login(node, "app", passwords["app"])
    finally:
        node.admin.close()


def test_the_app_user_cannot_rotate_itself(
    acl_server: tuple[RedisProcess, Path, dict[str, str]],
) -> None:
    proc, _acl, passwords = acl_server
    node = node_from_url(proc.url, "app", passwords["app"])
    try:
        with pytest.raises(RotationError):
            rotate_password([node], "app", passwords["app"], "x" * 32, clients_moved=lambda: None)
    finally:
        node.admin.close()
    admin = proc.client(username="admin", password=passwords["admin"])
    try:
        assert admin.acl_getuser("app")["passwords"] == [sha(passwords["app"])]
    finally:
        admin.close()
