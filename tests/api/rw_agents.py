"""Client processes of the cross-process read-after-write test (test_cross_process.py).

Each agent runs in a process of its own, talks HTTP to the API servers and returns what it
saw, stamped with ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every process of
the machine, so the test can order one process's acknowledgements against another's reads.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

API = "/api/v1/members/"


@dataclass(frozen=True, slots=True)
class Ack:
    member_id: int
    version: int
    acked_ns: int  # when the answer to the write had been received


@dataclass(frozen=True, slots=True)
class Read:
    member_id: int
    version: int
    started_ns: int  # when the request was about to be sent
    outcome: str  # X-Cache


def _wait(start_ns: int) -> None:
    time.sleep(max(0, start_ns - time.monotonic_ns()) / 1e9)


def writer(
    name: str, bases: list[str], ids: list[int], writes: int, seed: int, start_ns: int
) -> list[Ack]:
    """PATCH or PUT random members on random servers; every answer is an acknowledgement."""
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=base, timeout=30.0) for base in bases]
    acks: list[Ack] = []
    try:
        _wait(start_ns)
        for step in range(writes):
            member_id, client = rng.choice(ids), rng.choice(clients)
            first_name = f"{name}{step}"
            if rng.random() < 0.2:  # a whole replacement now and then
                current = client.get(f"{API}{member_id}").json()
                body = {
                    key: current[key]
                    for key in ("email", "last_name", "country", "status", "tier", "birth_date")
                }
                answer = client.put(f"{API}{member_id}", json=body | {"first_name": first_name})
            else:
                answer = client.patch(f"{API}{member_id}", json={"first_name": first_name})
            answer.raise_for_status()
            acks.append(Ack(member_id, int(answer.json()["version"]), time.monotonic_ns()))
            time.sleep(rng.random() * 0.01)
    finally:
        for client in clients:
            client.close()
    return acks


def reader(bases: list[str], ids: list[int], reads: int, seed: int, start_ns: int) -> list[Read]:
    """GET random members on random servers, as fast as the answers come."""
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=base, timeout=30.0) for base in bases]
    seen: list[Read] = []
    try:
        _wait(start_ns)
        for _ in range(reads):
            member_id, client = rng.choice(ids), rng.choice(clients)
            started = time.monotonic_ns()
            answer = client.get(f"{API}{member_id}")
            answer.raise_for_status()
            outcome = answer.headers.get("x-cache", "")
            seen.append(Read(member_id, int(answer.json()["version"]), started, outcome))
    finally:
        for client in clients:
            client.close()
    return seen
