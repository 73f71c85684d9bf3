"""``cachectl rotate-password USER``: a Redis ACL password changed without downtime.

An ACL user may hold several passwords at once. Rotation uses that, in two steps with the
clients' move in between::

    1. add      ACL SETUSER <user> #<sha256 of new>   both passwords work
       (verify: a fresh connection logs in with the new one)
    2. move     clients switch to the new password (deploy, secret reload, restart)
    3. remove   ACL SETUSER <user> !<sha256 of old>   only the new one works
       (verify: the old one is refused)

Passwords travel as SHA-256 digests (``#``/``!`` forms), so neither MONITOR, the slow log nor
ACL LOG ever shows one in clear. ACLs are not replicated: each step is applied to every node
given (master and replicas), then persisted with ACL SAVE where the node has an ACL file
(SENTINEL FLUSHCONFIG on a Sentinel: cachectl/rotate_sentinel.py).
Removing the old password is refused while it is the user's only one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

log = logging.getLogger("cachectl.rotate")

DEFAULT_GRACE_S: Final = 60.0


class RotationError(Exception):
    """A step failed or its verification did not hold; the message says which node."""


@dataclass(frozen=True)
class Node:
    """One Redis server, reached as an ACL admin; ``login`` opens a fresh connection to it."""

    admin: redis.Redis
    login: Callable[[str, str], redis.Redis]
    sentinel: bool = False  # a Sentinel keeps its users in its own config file

    @property
    def name(self) -> str:
        kwargs = self.admin.connection_pool.connection_kwargs
        return f"{kwargs.get('host')}:{kwargs.get('port')}"


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _command(client: redis.Redis, *args: str) -> Any:
    execute: Callable[..., Any] = client.execute_command
    return execute(*args)


def _save(node: Node) -> None:
    if node.sentinel:
        # Sentinel rewrites its config file (users included) on SENTINEL FLUSHCONFIG.
        _command(node.admin, "SENTINEL", "FLUSHCONFIG")
        return
    try:
        _command(node.admin, "ACL", "SAVE")
    except ResponseError as exc:
        # A server without an aclfile keeps its users in redis.conf: CONFIG REWRITE is the
        # operator's call there, not ours.
        if "aclfile" not in str(exc).lower():
            raise
        log.warning("%s has no ACL file: the change lives until its restart", node.name)


def passwords(node: Node, user: str) -> list[str]:
    """The SHA-256 digests of the user's passwords on the node."""
    found: Any = node.admin.acl_getuser(user)
    if not found:
        raise RotationError(f"{node.name}: no ACL user {user!r}")
    held: list[Any] = found.get("passwords") or []
    return [p.decode() if isinstance(p, bytes) else str(p) for p in held]


def can_login(node: Node, user: str, password: str) -> bool:
    try:
        client = node.login(user, password)
    except AuthenticationError:
        return False
    try:
        return bool(client.ping())
    except AuthenticationError:
        return False
    finally:
        client.close()


def add_password(nodes: Sequence[Node], user: str, new: str) -> None:
    """Step 1: ``user`` accepts ``new`` as well, on every node, verified by a login."""
    for node in nodes:
        try:
            passwords(node, user)
            _command(node.admin, "ACL", "SETUSER", user, f"#{digest(new)}")
            _save(node)
        except RedisError as exc:
            raise RotationError(f"{node.name}: adding the password failed: {exc}") from exc
        if not can_login(node, user, new):
            raise RotationError(f"{node.name}: {user} cannot log in with the new password")


def remove_password(nodes: Sequence[Node], user: str, old: str) -> None:
    """Step 3: ``user`` no longer accepts ``old``, on every node, verified by a refusal."""
    gone = digest(old)
    for node in nodes:
        try:
            held = passwords(node, user)
            if gone in held and len(held) < 2:
                raise RotationError(f"{node.name}: refusing to remove {user}'s only password")
            if gone in held:
                _command(node.admin, "ACL", "SETUSER", user, f"!{gone}")
                _save(node)
        except RedisError as exc:
            raise RotationError(f"{node.name}: removing the password failed: {exc}") from exc
        if can_login(node, user, old):
            raise RotationError(f"{node.name}: {user} still logs in with the old password")


def rotate_password(
    nodes: Sequence[Node],
    user: str,
    old: str,
    new: str,
    *,
    clients_moved: Callable[[], None] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Add ``new``, wait for the clients to move (``clients_moved`` returns when they have;
    by default ``grace_s`` seconds), then remove ``old``."""
    if old == new:
        raise RotationError("the new password is the old one")
    add_password(nodes, user, new)
    if clients_moved is not None:
        clients_moved()
    else:
        time.sleep(grace_s)
    remove_password(nodes, user, old)


def node_from_url(
    url: str, admin_user: str, admin_password: str, *, sentinel: bool = False, **options: Any
) -> Node:
    """A Node for ``redis[s]://host:port`` (options: ssl_* for TLS, timeouts)."""
    admin = redis.Redis.from_url(url, username=admin_user, password=admin_password, **options)

    def login(user: str, password: str) -> redis.Redis:
        return redis.Redis.from_url(url, username=user, password=password, **options)

    return Node(admin, login, sentinel)


def command(
    user: str,
    nodes: list[str],
    admin_user: str = "admin",
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Rotate USER's password on every node (redis[s]://host:port, master and replicas).

    Reads REDIS_ADMIN_PASSWORD, REDIS_OLD_PASSWORD and REDIS_NEW_PASSWORD from the
    environment (never from the command line, where ps would show them).
    """
    secrets: dict[str, str] = {}
    for name in ("REDIS_ADMIN_PASSWORD", "REDIS_OLD_PASSWORD", "REDIS_NEW_PASSWORD"):
        secrets[name] = os.environ.get(name, "")
        if not secrets[name]:
            raise RotationError(f"{name} is not set")
    built = [node_from_url(url, admin_user, secrets["REDIS_ADMIN_PASSWORD"]) for url in nodes]
    try:
        rotate_password(
            built,
            user,
            secrets["REDIS_OLD_PASSWORD"],
            secrets["REDIS_NEW_PASSWORD"],
            grace_s=grace_s,
        )
    finally:
        for node in built:
            node.admin.close()
