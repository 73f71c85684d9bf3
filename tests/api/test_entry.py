"""``python -m api_stub --port P``: a real uvicorn process serving the cached API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_REDIS_DB
from tests.support.redis_procs import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


def test_module_entry_serves_the_api_on_the_given_port(
    prefix: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_DB": str(TEST_REDIS_DB),
        "REDIS_KEY_PREFIX": prefix,
    }
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api_stub", "--port", str(port)],
        cwd=tmp_path,  # no .env of the working tree: the environment above is all it reads
        env=env | {"PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                ready = httpx.get(f"{base}/lookups/tiers", timeout=1.0)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "api.log").read_text()
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.1)
        assert ready.status_code == 200
        with httpx.Client(base_url=base) as client:
            first, second = client.get("/members/12"), client.get("/members/12")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert first.content == second.content
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
