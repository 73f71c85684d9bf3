"""cachectl backup and restore against a redis-server started for the test (BGSAVE and CONFIG
are not for the shared server), run as subprocesses configured through REDIS_HOST/REDIS_PORT."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_procs import RedisProcess, start_redis, wait_for

KEYS = 300
REPO = Path(__file__).resolve().parents[2]
PREFIX = "backup-test:"


def _cachectl(*args: str, port: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachectl.main", *args],
        # cwd without a .env: only these variables configure it
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO),  # this checkout's code, whichever one the venv installed
            "COLUMNS": "200",
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(port),
        },
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def source() -> Iterator[tuple[RedisProcess, redis.Redis]]:
    with start_redis() as proc:
        client = proc.client()
        try:
            client.mset({f"{PREFIX}{i}": f"value-{i}" for i in range(KEYS)})
            client.hset(f"{PREFIX}hash", mapping={"a": "1", "b": "2"})
            client.sadd(f"{PREFIX}set", *range(50))
            yield proc, client
        finally:
            client.close()


def test_backup_then_restore_verifies_and_detects_a_change(
    source: tuple[RedisProcess, redis.Redis], tmp_path: Path
) -> None:
    proc, client = source
    written = KEYS + 2
    made = _cachectl(
        "backup", "--dest", str(tmp_path / "copies"), "--json", port=proc.port, cwd=tmp_path
    )
    assert made.returncode == 0, made.stdout + made.stderr
    done = json.loads(made.stdout)
    copy = Path(done["copy"])
    assert copy.parent == (tmp_path / "copies").resolve() and copy.read_bytes()[:5] == b"REDIS"
    assert done["keys"] == written and done["bytes"] == copy.stat().st_size

    # --sample above the key count: every key is compared, so the change below is found.
    restore = ("restore", str(copy), "--sample", "1000", "--json")
    checked = _cachectl(*restore, port=proc.port, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    answer = json.loads(checked.stdout)
    assert answer["keys"] == written
    assert (answer["sampled"], answer["matched"], answer["changed"], answer["missing"]) == (
        written,
        written,
        0,
        0,
    )
    assert not _listening(answer["port"])  # stopped without --keep-running

    client.set(f"{PREFIX}7", "changed since the backup")
    client.delete(f"{PREFIX}8")
    checked = _cachectl(*restore, port=proc.port, cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    answer = json.loads(checked.stdout)
    assert (answer["matched"], answer["changed"], answer["missing"]) == (written - 2, 1, 1)
    assert answer["changed_keys"] == [f"{PREFIX}7"]
    assert not _listening(answer["port"])


def test_restore_without_verification_and_kept_running(
    source: tuple[RedisProcess, redis.Redis], tmp_path: Path
) -> None:
    proc, _client = source
    made = _cachectl("backup", "--dest", str(tmp_path), "--json", port=proc.port, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    copy = json.loads(made.stdout)["copy"]
    # Verification is off: the configured Redis (a dead port here) is never contacted.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = int(sock.getsockname()[1])
    kept = _cachectl(
        "restore", copy, "--no-verify", "--keep-running", "--json", port=dead, cwd=tmp_path
    )
    assert kept.returncode == 0, kept.stdout + kept.stderr
    answer = json.loads(kept.stdout)
    assert answer["keys"] == KEYS + 2 and "matched" not in answer
    restored = redis.Redis(host="127.0.0.1", port=answer["port"])
    try:
        assert restored.get(f"{PREFIX}3") == b"value-3"
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN drops the connection
            restored.shutdown(nosave=True)
        wait_for(lambda: not _listening(answer["port"]), 10, message="restored server to stop")
    finally:
        restored.close()
        shutil.rmtree(answer["dir"], ignore_errors=True)


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = int(sock.getsockname()[1])
    failed = _cachectl("backup", "--dest", str(tmp_path), port=dead, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: backup failed:") and failed.stderr.count("\n") == 1
    junk = tmp_path / "junk.rdb"
    junk.write_bytes(b"not an rdb")
    refused = _cachectl("restore", str(junk), port=dead, cwd=tmp_path)
    assert refused.returncode == 2 and "is not an RDB file" in refused.stderr
