"""PostgreSQL stopped mid-stream under a real flush worker, then started: the backlog waits in
Redis, the task retries with backoff, and the totals come out exact.

The database runs in a throwaway cluster of its own (pg_createcluster on a free port, trust
authentication), stopped and started with pg_ctlcluster and dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cache.writebehind import WriteBehind
from config import Settings
from db import make_engine
from db.writebehind import read_offset
from tests.support.redis_procs import free_port, start_redis
from tests.workers.processes import wait_for
from tests.writebehind.conftest import prepare
from tests.writebehind.support import (
    FlushWorker,
    Producer,
    db_last_seen,
    db_totals,
    send_flush,
    worker_env,
)
from workers.factory import create_app

pytestmark = [pytest.mark.fault, pytest.mark.slow]

VERSION = "15"
OUTAGE_SECONDS = float(os.environ.get("WB_PG_OUTAGE_SECONDS", "60"))  # a minute, as specified


def _ctl(name: str, action: str) -> None:
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, name, action]
    subprocess.run([*cmd, *(["-m", "fast"] if action == "stop" else [])], check=True)


@pytest.fixture
def cluster() -> Iterator[str]:
    """The URL of a database in a new cluster of our own."""
    name, port = f"wbtest{secrets.token_hex(4)}", free_port()
    create = ["pg_createcluster", VERSION, name, "-p", str(port), "--", "-A", "trust"]
    subprocess.run(create, check=True, capture_output=True)
    try:
        _ctl(name, "start")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        prepare(url)
        yield f"{url}#{name}"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", VERSION, name], check=False)


@pytest.fixture
def cluster_engine(cluster: str) -> Iterator[Engine]:
    engine = make_engine(cluster.split("#")[0])
    yield engine
    engine.dispose()


def test_a_database_outage_is_waited_out_and_nothing_is_lost(
    wb: WriteBehind, cluster: str, cluster_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    url, name = cluster.split("#")
    with start_redis() as broker:
        env = worker_env(settings.redis_key_prefix, url, f"redis://127.0.0.1:{broker.port}/0")
        app = create_app(
            settings.model_copy(update={"celery_broker_url": env["CELERY_BROKER_URL"]})
        )
        producer = Producer(wb, 30_000, rate=1_000 if OUTAGE_SECONDS > 20 else 1_500)
        worker = FlushWorker(env, tmp_path).start()
        try:
            send_flush(app, 25)
            producer.start()
            wait_for(lambda: read_offset(cluster_engine, wb.stream), 30, "a first commit")
            _ctl(name, "stop")
            down_at = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
            during = wb.health()
            _ctl(name, "start")
            print(
                f"postgres down {time.monotonic() - down_at:.1f}s: backlog {during.backlog},"
                f" lag {during.lag_seconds:.1f}s, accepted meanwhile, no 503"
            )
            assert during.backlog > 0 and during.lag_seconds >= OUTAGE_SECONDS * 0.8
            producer.join(60)
            assert producer.error is None and producer.accepted == producer.total
            send_flush(app, 25)
            up_at = time.monotonic()
            wait_for(lambda: wb.health().backlog == 0, 90, "the backlog to drain")
            print(f"backlog drained {time.monotonic() - up_at:.1f}s after the producer ended")
        except BaseException:
            print(worker.log_tail())
            raise
        finally:
            worker.stop()
            app.close()
        retries = worker.log_path.read_text().count("Retry in")
        print(f"flush task retries while the database was down: {retries}")
    assert retries >= 1
    assert db_totals(cluster_engine) == producer.totals()
    assert db_last_seen(cluster_engine) == producer.newest
