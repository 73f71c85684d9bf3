"""Helpers of the fault tests: a paced producer that remembers what was accepted, database
totals to compare it with, and ``celery worker`` flush processes that can be SIGKILLed."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text

from cache.writebehind import GROUP, KINDS, ActivityEvent, Backpressure, WriteBehind

REPO = Path(__file__).resolve().parents[2]
KIND_NAMES = tuple(KINDS)
Totals = dict[int, tuple[int, int, int]]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def stream_ids(client: Any, stream: str) -> list[str]:
    """Every id in the stream, oldest first."""
    return [entry_id.decode() for entry_id, _ in client.xrange(stream, "-", "+")]


def pending_ids(client: Any, stream: str) -> list[str]:
    """Ids delivered to a flusher and not acknowledged."""
    found = client.xpending_range(stream, GROUP, "-", "+", 100_000)
    return [p["message_id"].decode() for p in found]


def db_totals(engine: Engine) -> Totals:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT member_id, sum(logins), sum(checkins), sum(page_views)"
                " FROM member_activity_daily GROUP BY member_id"
            )
        )
        return {m: (int(lo), int(c), int(p)) for m, lo, c, p in rows}


def db_last_seen(engine: Engine) -> dict[int, dt.datetime]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT member_id, max(last_seen_at) FROM member_activity_daily"
                " WHERE last_seen_at IS NOT NULL GROUP BY member_id"
            )
        )
        return {m: at for m, at in rows}


@dataclass(eq=False)
class Producer(threading.Thread):
    """Records ``total`` random events, ``per_call`` a call, at about ``rate`` events/s."""

    wb: WriteBehind
    total: int
    rate: float
    members: int = 200
    per_call: int = 10
    accepted: int = 0
    refused: int = 0
    ids: list[str] = field(default_factory=list)
    expected: defaultdict[int, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0])
    )
    newest: dict[int, dt.datetime] = field(default_factory=dict)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        rng = random.Random(5)
        started = time.monotonic()
        try:
            while self.accepted < self.total:
                due = started + self.accepted / self.rate
                if (pause := due - time.monotonic()) > 0:
                    time.sleep(pause)
                now = dt.datetime.now(dt.UTC)
                at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # ms, as stored
                batch = [
                    ActivityEvent(rng.randint(1, self.members), rng.choice(KIND_NAMES), at)
                    for _ in range(min(self.per_call, self.total - self.accepted))
                ]
                try:
                    self.ids += self.wb.record(batch)
                except Backpressure:
                    self.refused += len(batch)
                    time.sleep(0.05)
                    continue
                for event in batch:
                    self.expected[event.member_id][KIND_NAMES.index(event.kind)] += 1
                    assert event.at is not None
                    if event.at > self.newest.get(event.member_id, event.at - dt.timedelta(1)):
                        self.newest[event.member_id] = event.at
                self.accepted += len(batch)
        except BaseException as exc:
            self.error = exc

    def totals(self) -> Totals:
        return {m: (lo, c, p) for m, (lo, c, p) in self.expected.items()}


def worker_env(prefix: str, database_url: str, broker_url: str) -> dict[str, str]:
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_DB": "13",
        "REDIS_KEY_PREFIX": prefix,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url.rsplit("/", 1)[0] + "/1",
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
    }


@dataclass
class FlushWorker:
    """``celery -A workers.app worker`` on cache.writebehind, one pool process, own session."""

    env: dict[str, str]
    directory: Path
    name: str = "wbflush@%h"  # stable: a restarted worker resumes its own pending entries
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "worker.log"

    def start(self) -> FlushWorker:
        command = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", "cache.writebehind", "-c", "1", "-P", "prefork", "-n", self.name,
            "-I", "tasks.writebehind", "-l", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.directory, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool process: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        text_ = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text_.splitlines()[-lines:])


def send_flush(app: Any, seconds: float) -> None:
    app.send_task(
        "tasks.writebehind.flush_writebehind",
        kwargs={"seconds": seconds},
        queue="cache.writebehind",
    )
