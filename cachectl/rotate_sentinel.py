"""Sentinel passwords changed without downtime, with the two-password ACL users of Redis 6.2+.

Two secrets belong to the Sentinels:

``cachectl rotate sentinel USER SENTINEL...``: the password clients (REDIS_SENTINEL_USERNAME /
REDIS_SENTINEL_PASSWORD) and the Sentinels' peers log in to the Sentinels with::

    1. add      ACL SETUSER <user> #<new> on every Sentinel        both passwords work
    2. peers    SENTINEL CONFIG SET sentinel-pass <new> where sentinel-user is <user>:
                the Sentinels' own links to each other move first (they accept both)
    3. move     clients switch to the new password (deploy, restart)
    4. remove   ACL SETUSER <user> !<old> on every Sentinel          only the new one works

``cachectl rotate sentinel-auth USER --sentinel S... NODE...``: the password the Sentinels log
in to the Redis master and replicas with (``sentinel auth-user``/``auth-pass``)::

    1. add      ACL SETUSER <user> #<new> on every Redis node
    2. move     SENTINEL SET <master> auth-pass <new> on every Sentinel (persisted by it)
    3. remove   ACL SETUSER <user> !<old> on every Redis node

Every step is persisted (SENTINEL FLUSHCONFIG rewrites a Sentinel's users into its config
file; ACL SAVE on the Redis nodes) and verified with fresh logins, as cachectl/rotate.py does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from cachectl.rotate import (
    DEFAULT_GRACE_S,
    Node,
    RotationError,
    _command,
    add_password,
    remove_password,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sentinel_config(node: Node) -> dict[str, str]:
    reply = _command(node.admin, "SENTINEL", "CONFIG", "GET", "*")
    if isinstance(reply, dict):  # RESP3, or a redis-py that parses the pairs
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


def move_peers(sentinels: Sequence[Node], user: str, new: str) -> int:
    """Step 2: Sentinels that reach their peers as ``user`` use ``new``; how many did."""
    moved = 0
    for node in sentinels:
        try:
            peer_user = _sentinel_config(node).get("sentinel-user") or "default"
            if peer_user != user:
                continue
            _command(node.admin, "SENTINEL", "CONFIG", "SET", "sentinel-pass", new)
            _command(node.admin, "SENTINEL", "FLUSHCONFIG")
        except RedisError as exc:
            raise RotationError(f"{node.name}: setting sentinel-pass failed: {exc}") from exc
        moved += 1
    return moved


def _wait(clients_moved: Callable[[], None] | None, grace_s: float) -> None:
    if clients_moved is not None:
        clients_moved()
    else:
        time.sleep(grace_s)


def rotate_sentinel_password(
    sentinels: Sequence[Node],
    user: str,
    old: str,
    new: str,
    *,
    clients_moved: Callable[[], None] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Rotate the password of ``user`` on the Sentinels (steps in the module docstring)."""
    if old == new:
        raise RotationError("the new password is the old one")
    if not all(node.sentinel for node in sentinels):
        raise RotationError("every node must be a Sentinel")
    add_password(sentinels, user, new)
    move_peers(sentinels, user, new)
    _wait(clients_moved, grace_s)
    remove_password(sentinels, user, old)


def move_auth_pass(sentinels: Sequence[Node], master: str, new: str) -> None:
    """The Sentinels log in to the master and replicas of ``master`` with ``new``."""
    for node in sentinels:
        try:
            _command(node.admin, "SENTINEL", "SET", master, "auth-pass", new)
        except RedisError as exc:
            raise RotationError(f"{node.name}: SENTINEL SET auth-pass failed: {exc}") from exc


def rotate_auth_pass(
    redis_nodes: Sequence[Node],
    sentinels: Sequence[Node],
    master: str,
    user: str,
    old: str,
    new: str,
    *,
    clients_moved: Callable[[], None] | None = None,
    grace_s: float = 0.0,
) -> None:
    """Rotate the password the Sentinels use on the Redis nodes (``sentinel auth-pass``)."""
    if old == new:
        raise RotationError("the new password is the old one")
    add_password(redis_nodes, user, new)
    move_auth_pass(sentinels, master, new)
    # The Sentinels' open links stay logged in; only their reconnections use the new one.
    _wait(clients_moved, grace_s)
    remove_password(redis_nodes, user, old)
