"""Flower as the platform starts it: its API answers with the credentials and refuses without,
shows task names and arguments, and keeps its state in the database file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import load_settings
from tests.support.redis_procs import free_port
from tests.workers import harness
from tests.workers.processes import REPO, wait_for
from workers import flower

pytestmark = pytest.mark.slow


@pytest.fixture
def running_flower(stack: harness.Stack, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    port = free_port()
    env = {**os.environ, **stack.env, "FLOWER_PORT": str(port), "PYTHONPATH": str(REPO)}
    env.pop("FLOWER_PASSWORD", None)
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.flower"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/healthcheck"), 60, "Flower to answer")
        printed = (tmp_path / "flower.log").read_text()
        password = printed.split("Flower login: admin / ")[1].split(" ")[0]
        yield url, password, tmp_path
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_api_needs_the_credentials(
    stack: harness.Stack, running_flower: tuple[str, str, Path]
) -> None:
    url, password, directory = running_flower
    assert httpx.get(f"{url}/api/workers", timeout=5).status_code == 401
    assert httpx.get(f"{url}/api/tasks", auth=("admin", "wrong"), timeout=5).status_code == 401

    def seen() -> dict[str, Any] | None:
        # Flower follows events from the moment it connects: a task sent before that shows
        # up without its name, so send until one is seen from the start.
        task_id = stack.client.enqueue_warmup("members", [1, 2, 3])
        assert stack.wait(task_id).state == "SUCCESS"
        tasks = httpx.get(f"{url}/api/tasks", auth=("admin", password), timeout=5)
        assert tasks.status_code == 200
        found: dict[str, Any] | None = tasks.json().get(task_id)
        return found if found and found.get("name") else None

    task = wait_for(seen, 40, "Flower to see a task")
    assert task["name"] == "tasks.warmup.warmup_members"
    assert task["args"] == "[[1, 2, 3]]"  # arguments readable, as Celery's event renders them
    workers = httpx.get(f"{url}/api/workers", auth=("admin", password), timeout=10)
    assert workers.status_code == 200
    # Upstream Flower serves these two without authentication (see workers/flower.py).
    assert httpx.get(f"{url}/healthcheck", timeout=5).status_code == 200
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200
    # The password never appears on the command line; the state file is where it was asked.
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    assert not [c for c in cmdlines if password.encode() in c]
    assert list(directory.glob("var/flower.db*"))


def test_configured_password_is_used_and_commas_are_refused() -> None:
    user, password, generated = flower.credentials(
        load_settings(_env_file=None, flower_password="s3cret")
    )
    assert (user, password, generated) == ("admin", "s3cret", False)
    assert flower.credentials(load_settings(_env_file=None))[2] is True
    from config import ConfigError

    with pytest.raises(ConfigError):
        flower.credentials(load_settings(_env_file=None, flower_password="a,b"))
    command = flower.command(5555, "127.0.0.1", Path("var/flower.db"))
    assert "--persistent=True" in command and "--db=var/flower.db" in command
    assert any("args" in part for part in command if part.startswith("--tasks_columns"))
