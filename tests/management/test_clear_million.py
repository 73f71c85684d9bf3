"""Clearing 1,000,000 keys while a reader loop runs: Redis stays responsive.

The keys live on a redis-server of the test's own (DEBUG POPULATE fills it in a second). A
reader process GETs hot keys the clear does not match, timing each request; the readers' p99
during the clear is compared with their p99 before it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api_stub.management import PREFIX
from tests.management.conftest import REPO, Tokens, serve, settings_for
from tests.support.redis_procs import RedisProcess, start_redis

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.anyio]
KEYS = 1_000_000
KEY_PREFIX = "tclear:"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_clearing_a_million_keys_keeps_redis_responsive(
    tmp_path: Path, database_url: str, broker: RedisProcess, tokens: Tokens
) -> None:
    with start_redis(extra={"enable-debug-command": "local"}) as proc:
        admin = proc.client()
        admin.execute_command("DEBUG", "POPULATE", KEYS, f"{KEY_PREFIX}member", 16)
        admin.mset({f"{KEY_PREFIX}lookup:hot{i}": b"x" * 64 for i in range(100)})
        assert admin.dbsize() == KEYS + 100
        out, stop = tmp_path / "latencies.txt", tmp_path / "stop"
        reader = subprocess.Popen(
            [sys.executable, "-m", "tests.management.readers", str(proc.port),
             f"{KEY_PREFIX}lookup:hot", str(out), str(stop)],
            cwd=REPO,
        )  # fmt: skip
        settings = settings_for(KEY_PREFIX, database_url, broker.port, redis_port=proc.port,
                                redis_db=0, redis_socket_timeout=5)  # fmt: skip
        try:
            async with serve(settings, tokens) as mgmt:
                time.sleep(1.0)  # baseline
                began = time.time()
                answer = await mgmt.call(
                    "DELETE", f"{PREFIX}/clear", params={"pattern": "member:*"}, timeout=300
                )
                ended = time.time()
            time.sleep(0.3)
        finally:
            stop.touch()
            reader.wait(30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["deleted"] == KEYS
        assert not list(admin.scan_iter(match=f"{KEY_PREFIX}member:*", count=10_000))
        stats = admin.info("commandstats")
        admin.close()
    samples = [tuple(map(float, line.split())) for line in out.read_text().splitlines()]
    before = [lat for at, lat in samples if at < began]
    during = [lat for at, lat in samples if began <= at <= ended]
    figures = {
        "clear_s": round(ended - began, 2),
        "steps": answer.json()["steps"],
        "reads_during": len(during),
        "p50_before_ms": round(statistics.median(before) * 1000, 3),
        "p99_before_ms": round(quantile(before, 0.99) * 1000, 3),
        "p50_during_ms": round(statistics.median(during) * 1000, 3),
        "p99_during_ms": round(quantile(during, 0.99) * 1000, 3),
        "max_during_ms": round(max(during) * 1000, 3),
        # Server time of one step: what a reader can wait behind, at most.
        "scan_us_per_call": stats["cmdstat_scan"]["usec_per_call"],
        "unlink_us_per_call": stats["cmdstat_unlink"]["usec_per_call"],
    }
    print("clear of 1,000,000 keys:", figures)
    # Responsive: the readers kept going throughout, and no read waited behind the clear
    # for anything like a blocking command's time (KEYS or FLUSHDB here: hundreds of ms).
    assert len(during) > 1000
    assert figures["p99_during_ms"] < 25
