"""Write-behind flush rows/s by partition count, on one Redis and on a 3-master Cluster.

For each of 1, 2 and 4 partitions: a backlog is preloaded through ``WriteBehind.record``
(one script call a partition a write), then one flusher process a partition drains it into
the same PostgreSQL table; rows/s is the rows upserted by all of them over the span from the
first start to the last finish. The same again on a Redis Cluster of three masters started
for the run (bench/_cluster.py), where the partitions' hash tags put their streams on
different masters. Each run has a key prefix of its own; the standalone keys are removed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from typing import Any, Final

from bench import _cluster
from bench._common import BENCH_DB, clear_prefix
from cache import build_cache
from cache.writebehind import ActivityEvent, Flusher, WriteBehind, WriteBehindConfig
from config import Settings, load_settings
from db import make_engine
from tasks.writebehind import sql_apply

PARTITIONS: Final = (1, 2, 4)
KINDS: Final = ("login", "checkin", "page_view")


def settings_for(prefix: str, cluster_nodes: str = "") -> Settings:
    """The bench's Redis: database 14 of the shared server, or the run's cluster."""
    return load_settings(
        redis_db=0 if cluster_nodes else BENCH_DB, redis_key_prefix=prefix, redis_url=None,
        redis_sentinels="", redis_cluster_nodes=cluster_nodes, redis_socket_timeout=5.0,
    )  # fmt: skip


def _config(partitions: int) -> WriteBehindConfig:
    return WriteBehindConfig(max_backlog=10**8, partitions=partitions)


def preload(wb: WriteBehind, events: int, members: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(0, events, 500):
        wb.record([ActivityEvent(rng.randint(1, members), rng.choice(KINDS)) for _ in range(500)])


def flush_rate(
    url: str, prefix: str, partitions: int, backlog: int, members: int, cluster_nodes: str = ""
) -> dict[str, Any]:
    """Preload ``backlog`` events over ``partitions``, drain them with one process each."""
    cache = build_cache(settings_for(prefix, cluster_nodes))
    try:
        wb = WriteBehind(cache.clients.writer, cache.keys, _config(partitions))
        wb.ensure_group()
        preload(wb, backlog, members, seed=partitions)
        shards = len({_shard(cache.clients.writer, stream) for stream in wb.streams})
        env = {**os.environ, "REDIS_KEY_PREFIX": prefix, "BENCH_CLUSTER_NODES": cluster_nodes}
        command = [sys.executable, "-m", "bench._wb_partitions", url, str(partitions)]
        children = [
            subprocess.Popen(
                [*command, str(p)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for p in range(partitions)
        ]
        for child in children:
            assert child.stdout is not None
            child.stdout.readline()  # "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        done = [json.loads(c.communicate(timeout=600)[0].splitlines()[-1]) for c in children]
        left = wb.health().backlog
        if not cluster_nodes:
            clear_prefix(prefix, cache.clients.writer)
    finally:
        cache.close()
    spent = max(d["end"] for d in done) - min(d["start"] for d in done)
    return {
        "partitions": partitions,
        "shards": shards,
        "events": sum(d["events"] for d in done),
        "rows": sum(d["rows"] for d in done),
        "seconds": round(spent, 3),
        "rows_per_s": round(sum(d["rows"] for d in done) / spent),
        "backlog_left": left,
    }


def _shard(client: Any, key: str) -> str:
    get_node = getattr(client, "get_node_from_key", None)
    return "standalone" if get_node is None else str(get_node(key).name)


def measure(url: str, prefix: str, backlog: int, members: int) -> dict[str, Any]:
    """Rows/s for each partition count, standalone and on a Cluster started here."""
    standalone = [flush_rate(url, f"{prefix}s{p}:", p, backlog, members) for p in PARTITIONS]
    with _cluster.start(masters=3) as cluster:
        clustered = [
            flush_rate(url, f"{prefix}c{p}:", p, backlog, members, cluster.nodes)
            for p in PARTITIONS
        ]
    return {"standalone": standalone, "cluster": clustered}


def drain_child(url: str, partitions: int, partition: int) -> None:
    """One flusher process: drain one partition once the parent says go; its counts."""
    prefix, nodes = os.environ["REDIS_KEY_PREFIX"], os.environ.get("BENCH_CLUSTER_NODES", "")
    cache, engine = build_cache(settings_for(prefix, nodes)), make_engine(url)
    wb = WriteBehind(cache.clients.writer, cache.keys, _config(partitions))
    flusher = Flusher(wb, sql_apply(engine), f"bench-part-{partition}", partition)
    with engine.connect():
        pass  # connected before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    stats = flusher.drain(600, until_empty=True)
    end = time.time()
    print(json.dumps({"start": start, "end": end, "events": stats.events, "rows": stats.rows}))
    engine.dispose()
    cache.close()


if __name__ == "__main__":
    drain_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
