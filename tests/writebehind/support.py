"""Helpers of the fault tests: a paced producer that remembers what was accepted, database
totals to compare it with, and ``celery worker`` flush processes that can be SIGKILLed."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from cache.writebehind import GROUP, KINDS, ActivityEvent, Backpressure, Flusher, WriteBehind
from tests.workers.processes import WorkerProcess

REPO = Path(__file__).resolve().parents[2]
KIND_NAMES = tuple(KINDS)
Totals = dict[int, tuple[int, int, int]]


def stream_ids(client: Any, stream: str) -> list[str]:
    """Every id in the stream, oldest first."""
    return [entry_id.decode() for entry_id, _ in client.xrange(stream, "-", "+")]


def drain_side_by_side(flushers: list[Flusher], seconds: float) -> None:
    """Run every flusher's drain until its stream is empty, each in a thread of its own."""
    threads = [
        threading.Thread(target=f.drain, args=(seconds,), kwargs={"until_empty": True})
        for f in flushers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


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
class FlushWorker(WorkerProcess):
    """A ``celery worker`` on cache.writebehind with one pool process, under a stable name: a
    worker restarted after a kill resumes its own pending entries."""

    name: str = "wbflush@%h"
    queues: tuple[str, ...] = ("cache.writebehind",)
    concurrency: int = 1


def send_flush(app: Any, seconds: float) -> None:
    app.send_task(
        "tasks.writebehind.flush_writebehind",
        kwargs={"seconds": seconds},
        queue="cache.writebehind",
    )
