"""Single flight: many callers on one expired key, the loader runs exactly once."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from cache import CacheService, DataType, build_cache
from config import Settings, load_settings
from tests.conftest import TEST_REDIS_DB

CALLERS = 200


def _counting_loader(counter_key: str) -> Any:
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)

    def loader() -> dict[str, str]:
        client.incr(counter_key)
        time.sleep(0.2)  # an expensive query
        return {"dashboard": "computed"}

    return loader


def _stampede(
    cache: CacheService, key: str, counter_key: str, callers: int, start_at: float
) -> list[Any]:
    loader = _counting_loader(counter_key)
    gate = threading.Barrier(callers)

    def call(_: int) -> Any:
        gate.wait()
        time.sleep(max(0.0, start_at - time.time()))
        return cache.get_or_load(key, loader, DataType.ANALYTICS)

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(call, range(callers)))


def test_threads_on_a_missing_key_load_once(cache: CacheService) -> None:
    key, counter = cache.keys.analytics("dashboard"), cache.keys.system("loads")
    results = _stampede(cache, key, counter, CALLERS, time.time() + 0.2)
    assert results == [{"dashboard": "computed"}] * CALLERS
    assert int(cache.clients.writer.get(counter) or 0) == 1
    counters = cache.metrics.of(DataType.ANALYTICS)
    # How many arrive during the load and wait, rather than after it and hit, is up to the
    # scheduler; that some waited on the lease instead of loading is what single flight means.
    assert counters.loads == 1 and counters.lease_waits >= 1


def test_threads_on_a_stale_key_load_once_and_serve_stale(cache: CacheService) -> None:
    key, counter = cache.keys.analytics("dashboard"), cache.keys.system("loads")
    cache.set(key, {"dashboard": "old"}, DataType.ANALYTICS, ttl=0.2)
    time.sleep(0.25)
    results = _stampede(cache, key, counter, CALLERS, time.time() + 0.2)
    assert int(cache.clients.writer.get(counter) or 0) == 1
    assert results.count({"dashboard": "computed"}) >= 1
    assert set(map(str, results)) <= {str({"dashboard": "old"}), str({"dashboard": "computed"})}


def _process_main(
    settings_dict: dict[str, Any], key: str, counter: str, start_at: float, callers: int, out: Any
) -> None:
    cache = build_cache(load_settings(**settings_dict))
    try:
        results = _stampede(cache, key, counter, callers, start_at)
        out.put(sum(r == {"dashboard": "computed"} for r in results))
    finally:
        cache.close()


def test_processes_on_a_missing_key_load_once(cache: CacheService, settings: Settings) -> None:
    key, counter = cache.keys.analytics("dashboard"), cache.keys.system("loads")
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    settings_dict = {
        "redis_host": "127.0.0.1",
        "redis_db": TEST_REDIS_DB,
        "redis_key_prefix": settings.redis_key_prefix,
        "_env_file": None,
    }
    processes, per_process = 4, CALLERS // 4
    start_at = time.time() + 4.0  # after every interpreter has started
    workers = [
        context.Process(
            target=_process_main, args=(settings_dict, key, counter, start_at, per_process, out)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    served = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    out.close()
    out.join_thread()
    assert served == [per_process] * processes
    assert int(cache.clients.writer.get(counter) or 0) == 1
