"""Reader processes of the near tier's cross-process test (test_near_processes.py).

Each reader opens the services of a process (near tier and tracking included), then reads the
keys in a loop until told to stop. Before each read it notes the newest version the writer
has had acknowledged for the key and when (shared memory, CLOCK_MONOTONIC: one clock for
every process of the machine); a read that answers an older version is stale, and its age
(read start minus that acknowledgement) is what it returns.
"""

from __future__ import annotations

import time
from typing import Any

from cache import DataType
from config import load_settings
from services import Services


def reader(
    settings: dict[str, Any],
    keys: list[str],
    versions: Any,
    acked: Any,
    stop: Any,
    ready: Any,
    results: Any,
) -> None:
    """A process target: puts its result on ``results``."""
    results.put(_read(settings, keys, versions, acked, stop, ready))


def _read(
    settings: dict[str, Any], keys: list[str], versions: Any, acked: Any, stop: Any, ready: Any
) -> dict[str, Any]:
    services = Services.open(load_settings(**settings, _env_file=None), near=True)
    try:
        assert services.tracker is not None and services.tracker.wait_connected(5)
        cache, near = services.cache, services.core.near
        assert near is not None
        ready.release()
        reads = stale = 0
        ages: list[float] = []
        n = 0
        count = len(keys)
        while not stop.value:
            index = n % count
            n += 1
            wanted = versions[index]  # the version first, then its time (written in reverse)
            at = acked[index]
            started = time.monotonic()
            value = cache.get(keys[index], DataType.MEMBER)
            reads += 1
            if isinstance(value, dict) and value["v"] < wanted:
                stale += 1
                ages.append(started - at)
        return {
            "reads": reads,
            "stale": stale,
            "ages": ages,
            "near_hits": near.counters.hits,
            "invalidations": near.counters.invalidations,
        }
    finally:
        services.close()
