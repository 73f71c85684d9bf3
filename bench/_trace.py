"""The day-shaped trace of bench.replay: generated once from a seed, replayed identically.

A day compressed into ``duration`` seconds: requests arrive as a Poisson process whose rate
follows a diurnal curve (a trough at the ends of the "night", the peak at "noon", see
:func:`diurnal`), thinned from ``peak_rps``. Each request is drawn from a fixed mix:

    5% member writes (PATCH of a member's tier)     5% activity events (write-behind)
    member reads (Zipf 1.0 over the members)        member list pages, the dashboard,
                                                    growth, demographics, lookups

Member ids come from Zipf(1.0) over ranks 1..members, mapped to ids through a fixed
permutation (the hottest member is not id 1). Beside the requests: a bulk import every
``import_every`` seconds, one Redis master kill (Sentinel failover) and one management
``clear``, at fixed fractions of the day.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Final

# Read routes and their shares of the reads (the rest of the 100% are writes and activity).
READ_MIX: Final = (
    ("member", 0.80),
    ("member_list", 0.10),
    ("dashboard", 0.02),
    ("growth", 0.015),
    ("demographics", 0.015),
    ("lookup", 0.05),
)
WRITE_SHARE: Final = 0.05
ACTIVITY_SHARE: Final = 0.05
KILL_AT: Final = 0.45  # of the day: the master is killed near the afternoon peak
CLEAR_AT: Final = 0.75
TIERS: Final = ("bronze", "silver", "gold", "platinum")
LOOKUPS: Final = ("tiers", "statuses", "countries")
ZIPF_EXPONENT: Final = 1.0


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # seconds from the start of the replay
    route: str  # the label it is reported under
    method: str
    path: str
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Trace:
    seed: int
    members: int
    duration: float
    peak_rps: float
    requests: tuple[Request, ...]
    imports: tuple[Request, ...]
    kill_at: float
    clear_at: float

    @property
    def writes(self) -> int:
        return sum(r.route in ("member_write", "activity") for r in self.requests)


def diurnal(t: float, duration: float) -> float:
    """The share of the peak rate at ``t``: 0.15 at "midnight" (both ends), 1.0 at "noon",
    with a morning shoulder (a day's traffic is not one sine)."""
    phase = t / duration
    base = 0.5 - 0.5 * math.cos(2 * math.pi * phase)
    shoulder = 0.15 * math.exp(-(((phase - 0.3) / 0.06) ** 2))
    return min(1.0, 0.15 + 0.85 * base + shoulder)


class Zipf:
    """Ranks 1..n with P(rank) proportional to rank^-s, mapped to ids by a permutation."""

    def __init__(self, n: int, rng: random.Random, exponent: float = ZIPF_EXPONENT) -> None:
        self.cumulative = list(itertools.accumulate(r**-exponent for r in range(1, n + 1)))
        self.ids = list(range(1, n + 1))
        rng.shuffle(self.ids)
        self.rng = rng

    def draw(self) -> int:
        rank = bisect.bisect_left(self.cumulative, self.rng.random() * self.cumulative[-1])
        return self.ids[min(rank, len(self.ids) - 1)]


def _read(rng: random.Random, zipf: Zipf, at: float) -> Request:
    route = rng.choices([name for name, _ in READ_MIX], [w for _, w in READ_MIX])[0]
    if route == "member":
        return Request(at, route, "GET", f"/api/v1/members/{zipf.draw()}")
    if route == "member_list":
        page, tier = rng.randint(1, 5), rng.choice(TIERS)
        return Request(at, route, "GET", f"/api/v1/members?tier={tier}&page={page}")
    if route == "lookup":
        return Request(at, route, "GET", f"/api/v1/lookups/{rng.choice(LOOKUPS)}")
    path = {
        "dashboard": "/api/v1/analytics/dashboard",
        "growth": "/api/v1/analytics/growth",
        "demographics": "/api/v1/statistics/demographics",
    }[route]
    return Request(at, route, "GET", path)


def _import(at: float, index: int, rows: int, seed: int) -> Request:
    lines = (
        json.dumps(
            {
                "email": f"replay-{seed}-{index}-{row}@example.org",
                "first_name": "Replay",
                "last_name": f"Import{index}",
                "country": "NL",
                "tier": TIERS[row % len(TIERS)],
            }
        )
        for row in range(rows)
    )
    body = "\n".join(lines).encode()
    return Request(at, "import", "POST", "/api/v1/members/import", body, "application/x-ndjson")


def generate(
    *,
    members: int,
    duration: float,
    peak_rps: float,
    seed: int = 7,
    import_every: float | None = None,
    import_rows: int = 500,
) -> Trace:
    rng = random.Random(seed)
    zipf = Zipf(members, rng)
    requests: list[Request] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak_rps)
        if t >= duration:
            break
        if rng.random() > diurnal(t, duration):  # thinning: the curve's share of the peak
            continue
        roll = rng.random()
        if roll < WRITE_SHARE:
            body = json.dumps({"tier": rng.choice(TIERS)}).encode()
            path = f"/api/v1/members/{zipf.draw()}"
            requests.append(Request(t, "member_write", "PATCH", path, body))
        elif roll < WRITE_SHARE + ACTIVITY_SHARE:
            kind = rng.choice(("login", "checkin", "page_view"))
            path = f"/api/v1/members/{zipf.draw()}/activity"
            requests.append(
                Request(t, "activity", "POST", path, json.dumps({"kind": kind}).encode())
            )
        else:
            requests.append(_read(rng, zipf, t))
    every = import_every if import_every is not None else duration / 4
    imports = tuple(
        _import(at, index, import_rows, seed)
        for index, at in enumerate(
            itertools.takewhile(lambda a: a < duration, itertools.count(every, every))
        )
    )
    return Trace(
        seed,
        members,
        duration,
        peak_rps,
        tuple(requests),
        imports,
        KILL_AT * duration,
        CLEAR_AT * duration,
    )
