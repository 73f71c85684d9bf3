"""SIGKILL the flush worker (a real ``celery worker``) at random points during 100,000 events.

The broker is a private redis-server; the stream lives on the shared Redis under the test's
prefix; the data goes to the throwaway PostgreSQL database. After every kill the test notes
whether the worker died between a commit and its acknowledgement (entries still pending whose
ids the database offset already covers): the case that would count twice without the offset.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cache.writebehind import WriteBehind, stream_id
from config import Settings
from db.writebehind import read_offset
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers.processes import wait_for
from tests.writebehind.support import (
    FlushWorker,
    Producer,
    db_last_seen,
    db_totals,
    pending_ids,
    send_flush,
    worker_env,
)
from workers.factory import create_app

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EVENTS = 100_000
KILLS = 4


def _moved(engine: Engine, stream: str, before: str | None) -> str | None:
    now = read_offset(engine, stream)
    return now if now != before else None


@pytest.fixture
def broker() -> Iterator[RedisProcess]:
    with start_redis() as proc:
        yield proc


def test_sigkilled_flush_workers_lose_nothing_and_count_nothing_twice(
    wb: WriteBehind,
    engine: Engine,
    pg_url: str,
    settings: Settings,
    broker: RedisProcess,
    tmp_path: Path,
) -> None:
    env = worker_env(settings.redis_key_prefix, pg_url, f"redis://127.0.0.1:{broker.port}/0")
    app = create_app(settings.model_copy(update={"celery_broker_url": env["CELERY_BROKER_URL"]}))
    rng = random.Random(11)
    producer = Producer(wb, EVENTS, rate=6_000)
    producer.start()
    worker = FlushWorker(env, tmp_path)
    between_commit_and_ack = 0
    try:
        for kill in range(1, KILLS + 1):
            offset = read_offset(engine, wb.stream)
            worker.start()
            send_flush(app, 25)
            offset = wait_for(lambda: _moved(engine, wb.stream, offset), 30, "a flush to commit")
            if kill % 2:
                time.sleep(rng.uniform(0.05, 1.2))  # anywhere in the loop
            else:  # at once after a commit: aims at the window before the acknowledgement
                poll = 0.0 if kill == 2 else 0.005
                wait_for(lambda: read_offset(engine, wb.stream) != offset, 10, "a commit", poll)
            worker.kill()
            committed = stream_id(read_offset(engine, wb.stream) or "0-0")
            pending = pending_ids(wb.client, wb.stream)
            done = sum(stream_id(entry_id) <= committed for entry_id in pending)
            between_commit_and_ack += bool(done)
            print(
                f"kill {kill}: {producer.accepted} accepted, {len(pending)} pending,"
                f" {done} of them already committed"
            )
        producer.join(60)
        assert producer.error is None and producer.accepted == EVENTS
        worker.start()
        send_flush(app, 25)
        wait_for(lambda: wb.health().backlog == 0, 60, "the backlog to drain")
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        worker.stop()
        app.close()
    print(f"kills between a commit and its ack: {between_commit_and_ack} of {KILLS}")
    assert db_totals(engine) == producer.totals()
    assert db_last_seen(engine) == producer.newest
    health = wb.health()
    assert (health.backlog, health.pending, health.dead_letters) == (0, 0, 0)
    assert read_offset(engine, wb.stream) == producer.ids[-1]
