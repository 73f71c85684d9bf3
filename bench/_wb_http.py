"""The activity route over HTTP beside the cached member GET, on the same API server, in the
same run: wrk, one thread, 50 connections.

    member GET              GET /api/v1/members/{id} over 1,000 members read once before
                            (cache hits: the near tier's rendered bytes)
    activity, 1 event       POST /api/v1/members/{id}/activity {"kind": ...}
    activity, 10 events     the same with {"events": [10 events]} (events/s = 10 x requests/s)

The server is the API's own factory under uvicorn (bench/_http.py), on database 14 of the
shared Redis under the run's prefix (removed after) and the run's throwaway database.
"""

from __future__ import annotations

import random
from typing import Any, Final

import httpx

from bench._common import BENCH_DB, clear_prefix
from bench._http import HOST, Server, WrkResult, fixed_paths, require_wrk, wrk

CONNECTIONS: Final = 50
SAMPLE: Final = 1_000
READY: Final = "/bench-ready"  # a 404 that touches nothing: the server is up
TARGET_RATIO: Final = 0.8  # single events/s against cached GETs/s


def _post_script(ids: list[int], events: int) -> str:
    kinds = ("login", "checkin", "page_view")
    if events == 1:
        body = '{"kind":"login"}'
    else:
        body = '{"events":[' + ",".join(f'{{"kind":"{kinds[i % 3]}"}}' for i in range(events))
        body += "]}"
    listed = ",".join(map(str, ids))
    return (
        f"local ids = {{{listed}}}\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        f"local body = '{body}'\n"
        "function request()\n"
        "  sent = sent + 1\n"
        "  writes = writes + 1\n"
        '  local path = "/api/v1/members/" .. ids[math.random(#ids)] .. "/activity"\n'
        '  return wrk.format("POST", path, headers, body)\n'
        "end\n"
    )


def measure(
    database_url: str, members: int, seconds: float, prefix: str, rounds: int = 1
) -> dict[str, Any]:
    """Requests/s and events/s of the three workloads on one server, in ``rounds`` rounds of
    the three (the host's other load drifts: a round keeps its GET and POSTs close in time).
    The figures are the median round's (by single events / GETs); ``by_round`` has each."""
    require_wrk()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_HOST": HOST,
        "REDIS_PORT": "6379",
        "REDIS_DB": str(BENCH_DB),
        "REDIS_KEY_PREFIX": prefix,
    }
    ids = random.Random(5).sample(range(1, members + 1), min(SAMPLE, members))
    runs: list[tuple[WrkResult, WrkResult, WrkResult]] = []
    try:
        with Server("activity", "bench.endpoints:api_app", env, ready=READY) as server:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                for member_id in ids:  # cached (and held by the near tier) before measuring
                    client.get(f"/api/v1/members/{member_id}").raise_for_status()
                answer = client.post(f"/api/v1/members/{ids[0]}/activity", json={"kind": "login"})
                if answer.status_code != 202:
                    raise RuntimeError(f"activity answered {answer.status_code}: {answer.text}")
            paths = [f"/api/v1/members/{member_id}" for member_id in ids]
            scripts = (fixed_paths(paths), _post_script(ids, 1), _post_script(ids, 10))
            for _ in range(max(1, rounds)):
                get, one, ten = (
                    wrk(server.base, script, connections=CONNECTIONS, seconds=seconds)
                    for script in scripts
                )
                runs.append((get, one, ten))
    finally:
        clear_prefix(prefix)
    by_round = [
        {
            "member_get_rps": round(get.rps, 1),
            "single_rps": round(one.rps, 1),
            "batch10_events_per_s": round(ten.rps * 10, 1),
            "single_vs_get": _ratio(one, get),
        }
        for get, one, ten in runs
    ]
    get, one, ten = sorted(runs, key=lambda run: _ratio(run[1], run[0]))[len(runs) // 2]
    return {
        "connections": CONNECTIONS,
        "member_get": get.as_dict(),
        "activity_single": one.as_dict() | {"events_per_s": round(one.rps, 1)},
        "activity_batch10": ten.as_dict() | {"events_per_s": round(ten.rps * 10, 1)},
        "single_vs_get": round(one.rps / get.rps, 3) if get.rps else None,
        "target_single_vs_get": TARGET_RATIO,
        "target_met": bool(get.rps and one.rps >= TARGET_RATIO * get.rps),
        "rounds": len(runs),
        "by_round": by_round,
    }


def _ratio(single: WrkResult, get: WrkResult) -> float:
    return round(single.rps / get.rps, 3) if get.rps else 0.0
