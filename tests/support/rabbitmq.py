"""RabbitMQ for tests: a virtual host per test run on the machine's broker (bench/_rabbitmq.py,
which the benches use too), and what RabbitMQ reports of its queues."""

from __future__ import annotations

import json
from typing import Any

from bench._rabbitmq import HOST, PORT, rabbitmqctl, vhost, vhost_of

__all__ = ["HOST", "PORT", "queues", "rabbitmqctl", "vhost"]


def queues(url: str) -> dict[str, dict[str, Any]]:
    """The vhost's queues as RabbitMQ reports them: name -> {type, messages, ...}."""
    out = rabbitmqctl(
        "list_queues", "-p", vhost_of(url), "name", "type", "messages", "durable",
        "--formatter", "json",
    )  # fmt: skip
    return {row["name"]: row for row in json.loads(out[out.index("[") :])}
