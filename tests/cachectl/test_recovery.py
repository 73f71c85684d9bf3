"""The disaster-recovery drill: a node lost with its data comes back from a backup.

A private redis-server runs as production's do (AOF everysec and RDB saves); the platform's
own code fills it: member activity through the write-behind buffer, flushed to PostgreSQL by
the flush task on a real (in-process) Celery worker, a member change's invalidation waiting
in the broker's queue (no worker consumes cache.invalidate yet), cached member records. The
daily backup job copies it (and its manifest) to BACKUP_DIR and BACKUP_COPY_DIR; a flush
after the backup applies the rest. Then the node is killed, its files deleted and restarted
empty, and ``cachectl restore --into`` brings back the copy from the second directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from sqlalchemy import Engine
from typer.testing import CliRunner

from cache import DataType
from cache.writebehind import GROUP, ActivityEvent
from cachectl.main import app as cachectl
from db import make_engine
from services import Services
from tasks.jobs.backup import backup
from tasks.jobs.manifest import manifest_path
from tests.support.postgres import drop_database, prepared_database
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers import harness, services
from tests.writebehind.support import db_totals
from workers import routing
from workers.client import TaskClient
from workers.factory import create_app
from workers.runtime import CacheCelery

MEMBERS = 40
PERIOD = "2098-02-03"
REPO = Path(__file__).resolve().parents[2]
PRODUCTION_PERSISTENCE = {"appenddirname": "appendonlydir", "aof-use-rdb-preamble": "yes"}


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    name, url = prepared_database("dr", members=MEMBERS, now=services.SEED_NOW)
    engine = make_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_database(name)


@pytest.fixture
def node() -> Iterator[RedisProcess]:
    with start_redis(
        appendonly=True, save="3600 1 300 100 60 10000", extra=PRODUCTION_PERSISTENCE
    ) as proc:
        yield proc


def _cachectl(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachectl.main", *args],
        # This checkout's code, whichever one the venv has installed.
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        cwd=cwd,  # no .env there: only these variables configure it
        timeout=120,
    )


def _record(producer: Services, first: int, rounds: int) -> dict[int, list[int]]:
    """Activity of members first..MEMBERS through the write-behind buffer; the totals sent."""
    sent: dict[int, list[int]] = {}
    for n in range(rounds):
        events = [
            ActivityEvent(member, kind, times=1 + (member + n) % 3)
            for member in range(first, MEMBERS + 1)
            for kind in ("login", "checkin", "page_view")
        ]
        producer.writebehind.record(events)
        for event in events:
            counts = sent.setdefault(event.member_id, [0, 0, 0])
            counts[("login", "checkin", "page_view").index(event.kind)] += event.times
    return sent


def _add(*totals: dict[int, list[int]]) -> dict[int, tuple[int, int, int]]:
    summed: dict[int, list[int]] = {}
    for part in totals:
        for member, counts in part.items():
            into = summed.setdefault(member, [0, 0, 0])
            for i, count in enumerate(counts):
                into[i] += count
    return {member: (c[0], c[1], c[2]) for member, c in summed.items()}


def _state(node: RedisProcess, stream: str, prefix: str) -> dict[str, Any]:
    """What must come back: the stream's entries and groups, the queued invalidations, the
    cached records with their TTLs."""
    cache, broker = node.client(db=services.CACHE_DB), node.client(db=services.BROKER_DB)
    try:
        groups = [
            {k: g[k] for k in ("name", "pending", "last-delivered-id", "consumers")}
            for g in cache.xinfo_groups(stream)
        ]
        members = sorted(cache.scan_iter(match=f"{prefix}member:*", count=1000))
        return {
            "entries": cache.xrange(stream),
            "groups": groups,
            "invalidations": broker.lrange(routing.Q_INVALIDATE, 0, -1),
            "members": members,
            "ttls": [cache.pttl(key) for key in members],
        }
    finally:
        cache.close()
        broker.close()


def _wipe(node: RedisProcess) -> None:
    """The node lost with its disk: killed, its RDB and AOF deleted, started empty."""
    node.kill()
    (node.dir / "dump.rdb").unlink(missing_ok=True)
    shutil.rmtree(node.dir / "appendonlydir", ignore_errors=True)
    node.restart()
    assert _keyspace(node) == {}


def _keyspace(node: RedisProcess) -> dict[str, Any]:
    client = node.client()
    try:
        return dict(client.info("keyspace"))
    finally:
        client.close()


def _run(client: TaskClient, spec: routing.TaskSpec, *args: object) -> Any:
    outcome = harness.final(client, client.send(spec, *args), 30)
    assert outcome.state == "SUCCESS", outcome
    return outcome.result


def test_a_lost_node_is_restored_from_the_second_copy_and_flushes_exactly_once(
    node: RedisProcess,
    database: tuple[str, Engine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here: only `env` configures cachectl
    url, engine = database
    prefix = f"dr-{uuid.uuid4().hex[:8]}:"
    backups, remote = tmp_path / "backups", tmp_path / "remote"
    env = services.stack_env(
        prefix, node.port, url, BACKUP_DIR=str(backups), BACKUP_COPY_DIR=str(remote)
    )
    settings = harness.settings_from_env(env)
    app: CacheCelery = create_app(settings)
    client = TaskClient(settings, app=app)
    producer = Services.open(settings)
    stream = producer.writebehind.streams[0]
    try:
        # Before the backup: activity flushed (A), then more waiting in the stream (B), an
        # invalidation queued, member records cached.
        with start_worker(
            app, pool="threads", concurrency=2, perform_ping_check=False,
            exclude_queues=[routing.Q_INVALIDATE],
        ):  # fmt: skip
            flushed = _record(producer, 1, 3)
            assert _run(client, routing.FLUSH_WRITEBEHIND, 1.0)["events"] > 0
            pending = _record(producer, 11, 2)
            change = client.enqueue_member_change("update", 7)
            producer.cache.set_many(
                {producer.keys.member(i): {"id": i, "version": 1} for i in range(1, 21)},
                DataType.MEMBER,
            )
            before = _state(node, stream, prefix)
            # Flushed entries leave the stream: B alone, 2 rounds of 3 kinds for members 11...
            assert len(before["entries"]) == 2 * 3 * (MEMBERS - 10)
            assert len(before["invalidations"]) == 1 and len(before["members"]) == 20
            assert _run(client, routing.DAILY_BACKUP, PERIOD)["ran"] is True
            # B is applied after the backup: the restored stream holds it again.
            after_backup = _run(client, routing.FLUSH_WRITEBEHIND, 1.0)
            assert after_backup["events"] == len(before["entries"]) and after_backup["rows"] > 0
            assert db_totals(engine) == _add(flushed, pending)
    finally:
        producer.close()
        client.close()
        app.close_runtime()
        app.close()

    copy = remote / f"dump-{PERIOD}.rdb"
    assert copy.exists() and (backups / copy.name).read_bytes() == copy.read_bytes()
    manifest = json.loads((remote / f"dump-{PERIOD}.manifest.json").read_text())
    recorded = manifest["inventory"][str(services.CACHE_DB)]["streams"][stream]
    assert recorded["length"] == len(before["entries"])
    assert manifest["inventory"][str(services.BROKER_DB)]["queues"] == {routing.Q_INVALIDATE: 1}

    _wipe(node)
    into = ("--into", f"redis://127.0.0.1:{node.port}", "--json")

    # A truncated copy is refused before anything is written.
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(copy, broken)
    shutil.copy(remote / f"dump-{PERIOD}.manifest.json", broken)
    with (broken / copy.name).open("r+b") as fh:
        fh.truncate(copy.stat().st_size - 100)
    refused = CliRunner().invoke(cachectl, ["restore", str(broken / copy.name), *into], env=env)
    assert refused.exit_code == 2, refused.output
    assert "truncated" in refused.stderr and _keyspace(node) == {}

    # The operator's command, in a process of its own.
    restored = _cachectl("restore", str(copy), *into, cwd=tmp_path, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    answer = json.loads(restored.stdout)
    assert answer["ok"] and answer["differences"] == [], answer
    assert _state(node, stream, prefix) | {"ttls": None} == before | {"ttls": None}
    after = _state(node, stream, prefix)["ttls"]
    assert all(0 < ttl <= was for ttl, was in zip(after, before["ttls"], strict=True))

    # The node now holds data: a second restore is refused, naming what is there.
    again = CliRunner().invoke(cachectl, ["restore", str(copy), *into], env=env)
    assert again.exit_code == 2 and "is not empty" in again.stderr, again.output

    # Back in service: the queued invalidation runs, and the restored stream entries that the
    # database already holds (B, flushed after the backup) are not counted twice.
    app = create_app(settings)
    client = TaskClient(settings, app=app)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            assert harness.final(client, change, 30).state == "SUCCESS"
            replayed = _run(client, routing.FLUSH_WRITEBEHIND, 1.0)
            assert (replayed["events"], replayed["rows"]) == (len(before["entries"]), 0)
            assert db_totals(engine) == _add(flushed, pending)
            cache = node.client()
            try:  # read, acknowledged and trimmed: nothing left to apply again
                assert cache.xpending(stream, GROUP)["pending"] == 0 and cache.xlen(stream) == 0
            finally:
                cache.close()
    finally:
        client.close()
        app.close_runtime()
        app.close()


def test_a_node_with_data_takes_the_copy_only_with_force_and_keeps_its_other_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here: only the environment configures cachectl
    with start_redis() as source, start_redis() as target:
        written, live = source.client(), target.client()
        written.mset({f"k:{i}": i for i in range(100)})
        written.set("k:ttl", "v", ex=600)
        copy = backup(written, tmp_path, "2031-01-01")["copy"]
        live.set("k:7", "newer")
        live.set("mine", "kept")
        # A database in the URL changes nothing: each database goes to its own number.
        into = ["restore", copy, "--into", f"{target.url}/5", "--json"]

        refused = CliRunner().invoke(cachectl, into, env={})
        assert refused.exit_code == 2
        assert refused.stderr.startswith("error: refused: redis://127.0.0.1:")
        assert "is not empty (db 0: 2 keys)" in refused.stderr and "--force" in refused.stderr
        assert live.get("k:7") == b"newer" and live.dbsize() == 2

        forced = CliRunner().invoke(cachectl, [*into, "--force"], env={})
        assert forced.exit_code == 0, forced.output
        answer = json.loads(forced.stdout)
        assert answer["ok"] and answer["forced_over"] == {"0": 2} and answer["restored"] == 101
        assert live.get("k:7") == b"7" and live.get("mine") == b"kept"
        assert 0 < live.pttl("k:ttl") <= 600_000 and live.pttl("k:1") == -1

        # A copy whose manifest is gone: refused, unless asked for without one.
        manifest_path(Path(copy)).unlink()
        missing = CliRunner().invoke(cachectl, [*into, "--force"], env={})
        assert missing.exit_code == 2 and "--no-manifest" in missing.stderr, missing.output
        bare = CliRunner().invoke(cachectl, [*into, "--force", "--no-manifest"], env={})
        assert bare.exit_code == 0 and json.loads(bare.stdout)["ok"], bare.output
        written.close()
        live.close()
