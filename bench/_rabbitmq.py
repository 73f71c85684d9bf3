"""A RabbitMQ virtual host of a run's own on the machine's broker (127.0.0.1:5672).

``rabbitmqctl`` (root) creates the vhost and lets ``guest`` in; the vhost, its queues and
their messages are deleted at the end, so runs (benches, test sessions) never meet each
other's queues.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from db.engine import port_answers

HOST: Final = "127.0.0.1"
PORT: Final = 5672


def answers() -> bool:
    """Whether a broker listens on HOST:PORT."""
    return port_answers(HOST, PORT)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")
    return done.stdout


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names."""
    return url.rsplit("/", 1)[1]


@contextmanager
def vhost(label: str = "test") -> Iterator[str]:
    """The AMQP URL of a fresh vhost ``<label>-<random>`` (guest may configure, write and
    read everything)."""
    name = f"{label}-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{HOST}:{PORT}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)
