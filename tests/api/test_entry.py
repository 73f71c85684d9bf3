"""``python -m api_stub --port P``: a real uvicorn process serving the cached API."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import TEST_REDIS_DB
from tests.support.api_process import ApiProcess


def test_module_entry_serves_the_api_on_the_given_port(
    prefix: str, database_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_DB": str(TEST_REDIS_DB),
        "REDIS_KEY_PREFIX": prefix,
    }
    api = ApiProcess(env, tmp_path).start()
    try:
        base = f"{api.base_url}/api/v1"
        assert httpx.get(f"{base}/lookups/tiers", timeout=5.0).status_code == 200
        with httpx.Client(base_url=base) as client:
            first, second = client.get("/members/12"), client.get("/members/12")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert first.content == second.content
    finally:
        api.stop()
