"""Celery processes for tests: ``celery worker`` and ``celery beat`` subprocesses.

Each runs in its own session (process group), with its output in a log file in its working
directory, which is outside the repository (no .env is read, nothing is written into the
tree). ``stop`` is a warm shutdown (SIGTERM); ``kill`` is SIGKILL of the whole group, the
way an OOM killer or a lost host takes a worker away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

from tests.support.process_group import kill_group, stop_group
from workers import routing
from workers.client import TaskClient

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "condition",
    poll: float = 0.05,
) -> T:
    """The first truthy value ``predicate`` returns; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


@dataclass
class CeleryProcess:
    env: dict[str, str]
    cwd: Path
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name.split('@')[0]}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:  # a restart adds to the log of the earlier runs
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown code runs, nothing is acknowledged."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL of the group if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc, timeout)
        kill_group(self.proc)  # pool children a killed parent left


@dataclass
class WorkerProcess(CeleryProcess):
    """``celery -A workers.app worker`` consuming ``queues``."""

    queues: tuple[str, ...] = routing.QUEUES
    concurrency: int = 2
    app: str = "workers.app"

    def __post_init__(self) -> None:
        if "@" not in self.name:
            self.name = f"{self.name}@%h"

    @property
    def hostname(self) -> str:
        return self.name.replace("%h", os.uname().nodename)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-Q",
            ",".join(self.queues),
            "-c",
            str(self.concurrency),
            "-P",
            "prefork",
            "-n",
            self.name,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def wait_ready(self, client: TaskClient, timeout: float = 30.0) -> None:
        """Until the worker answers a control ping (``celery inspect ping``)."""

        def answered() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            replies = client.app.control.ping(destination=[self.hostname], timeout=0.5) or []
            return any(self.hostname in reply for reply in replies)

        wait_for(answered, timeout, "the worker to answer a ping")


@dataclass
class BeatProcess(CeleryProcess):
    """``celery -A <app> beat`` with its schedule file in its working directory."""

    app: str = "workers.app"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "beat",
            "-s",
            str(self.cwd / f"{self.name}-schedule"),
            "-l",
            "DEBUG",
        ]
