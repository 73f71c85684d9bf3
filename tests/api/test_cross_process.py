"""Read-after-write across OS processes: two uvicorn servers of the API sharing one Redis and
one database, writer and reader client processes, and evictions from this process.

Every writer records when each write was acknowledged and at which version; every reader
records when each GET started and which version it answered. A GET that started after an
acknowledgement must show at least that version, whichever server answered it. Member entries
live one second (soft) so reads also go through expiry, stale serving and refills, and random
deletions of the entries (evictions) make fills race with writes. The seed is printed on
failure; RAW_SEED=<seed> repeats a run.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from cache import Keys
from tests.api import rw_agents
from tests.conftest import TEST_REDIS_DB
from tests.support.api_process import ApiProcess

IDS = range(81, 101)  # members no other test of the session writes
WRITERS, WRITES = 2, 60
READERS, READS = 3, 400


@contextmanager
def api_process(env: dict[str, str], workdir: Path) -> Iterator[str]:
    """``python -m api_stub`` on a free port; yields its base URL."""
    api = ApiProcess(env, workdir).start()
    try:
        yield api.base_url
    finally:
        api.stop()


@pytest.mark.slow
def test_no_read_started_after_an_acknowledged_write_is_stale_across_processes(
    prefix: str, database_url: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    seed = int(os.environ.get("RAW_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    ids = rng.sample(IDS, 5)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_DB": str(TEST_REDIS_DB),
        "REDIS_KEY_PREFIX": prefix,
        "CACHE_MEMBER_TTL": "1",
    }
    keys = Keys(prefix).members(ids)
    with ExitStack() as stack:
        bases = [stack.enter_context(api_process(env, tmp_path / f"api{n}")) for n in range(2)]
        initial = {
            member_id: httpx.get(f"{bases[0]}/api/v1/members/{member_id}").json()["version"]
            for member_id in ids
        }
        start_ns = time.monotonic_ns() + 2_000_000_000  # room for the agents to start
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(WRITERS + READERS, mp_context=spawn) as pool:
            writers = [
                pool.submit(
                    rw_agents.writer, f"w{n}", bases, ids, WRITES, rng.getrandbits(32), start_ns
                )
                for n in range(WRITERS)
            ]
            readers = [
                pool.submit(rw_agents.reader, bases, ids, READS, rng.getrandbits(32), start_ns)
                for _ in range(READERS)
            ]
            evictions = 0
            while not all(future.done() for future in (*writers, *readers)):
                evictions += int(redis_client.unlink(rng.choice(keys)))
                time.sleep(0.005)
            wait([*writers, *readers])
        acks = [ack for future in writers for ack in future.result()]
        reads = [read for future in readers for read in future.result()]
        final = {
            member_id: [
                httpx.get(f"{base}/api/v1/members/{member_id}").json()["version"] for base in bases
            ]
            for member_id in ids
        }

    acked: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for ack in acks:
        acked[ack.member_id].append((ack.acked_ns, ack.version))
    stale, checked = [], 0
    for read in reads:
        floor = max(
            [initial[read.member_id]]
            + [version for at, version in acked[read.member_id] if at < read.started_ns]
        )
        checked += floor > initial[read.member_id]
        if read.version < floor:
            stale.append((read, floor))
    assert stale == [], f"seed {seed}: {len(stale)} stale reads, first {stale[:3]}"

    assert len(acks) == WRITERS * WRITES and len(reads) == READERS * READS
    for member_id, versions in acked.items():  # every write made a version of its own
        assert len({version for _, version in versions}) == len(versions), (seed, member_id)
    latest = {
        member_id: max([initial[member_id], *(v for _, v in acked[member_id])]) for member_id in ids
    }
    assert final == {member_id: [latest[member_id]] * 2 for member_id in ids}, seed
    # The run did test something: reads after writes, through misses and hits alike.
    assert checked > READERS * READS // 4, (seed, checked)
    outcomes = {read.outcome for read in reads}
    assert {"HIT", "MISS"} <= outcomes, (seed, outcomes)
    assert evictions > 0
