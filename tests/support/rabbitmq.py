"""RabbitMQ for tests: a virtual host per test run on the machine's broker (127.0.0.1:5672).

``rabbitmqctl`` (root) creates the vhost and lets ``guest`` in; the vhost, its queues and
their messages are deleted at the end, so runs never meet each other's queues.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HOST, PORT = "127.0.0.1", 5672


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")
    return done.stdout


@contextmanager
def vhost() -> Iterator[str]:
    """The AMQP URL of a fresh vhost (guest may configure, write and read everything)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{HOST}:{PORT}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def queues(url: str) -> dict[str, dict[str, Any]]:
    """The vhost's queues as RabbitMQ reports them: name -> {type, messages, ...}."""
    name = url.rsplit("/", 1)[1]
    out = rabbitmqctl(
        "list_queues", "-p", name, "name", "type", "messages", "durable", "--formatter", "json"
    )
    return {row["name"]: row for row in json.loads(out[out.index("[") :])}
