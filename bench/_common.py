"""Shared helpers of the benchmarks: a realistic member record and interleaved timing.

Timing model: every contender exposes ``batch(n) -> seconds`` that performs ``n`` operations
back to back and returns the time they took (set-up excluded). :func:`measure_interleaved`
calibrates each contender once, then runs ``rounds`` rounds; a round is cut into ``slices``
slices and in every slice each contender runs its share, in an order that rotates from slice
to slice. Machine noise (other processes, CPU frequency, the Redis server being descheduled)
therefore lands on all contenders alike, and a round's figure is its total operations over its
total time. Reports use the median round.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis

# The shared Redis's database the benches use, each under a key prefix of its own.
BENCH_DB: Final = 14


def clear_prefix(prefix: str, client: Any = None) -> None:
    """Unlink every key under ``prefix``, SCAN + UNLINK in batches of 500; ``client`` when
    given (a Cluster client scans every node), else the shared Redis's bench database."""
    own = client is None
    if own:
        client = redis.Redis(host="127.0.0.1", port=6379, db=BENCH_DB)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
    finally:
        if own:
            client.close()


_FIRST_NAMES = ("Alexandra", "Benedikt", "Carolina", "Dmitri", "Eleanor", "Farouk", "Greta")
_LAST_NAMES = ("Kowalski", "Fernandez-Ortega", "Nakamura", "O'Sullivan", "Lindqvist", "Okafor")
_CITIES = (
    ("Warsaw", "PL", "Mazowieckie", "pl-PL", "Europe/Warsaw", "PLN"),
    ("Lyon", "FR", "Auvergne-Rhone-Alpes", "fr-FR", "Europe/Paris", "EUR"),
    ("Osaka", "JP", "Osaka", "ja-JP", "Asia/Tokyo", "JPY"),
    ("Cork", "IE", "Munster", "en-IE", "Europe/Dublin", "EUR"),
)
_TIERS = ("bronze", "silver", "gold", "platinum")
_STATUSES = ("active", "active", "active", "suspended", "lapsed")


def member_record(member_id: int) -> dict[str, Any]:
    """A member as the API serves it: ~25 fields, nested address/preferences/lists, ~1.7 KB JSON."""
    first = _FIRST_NAMES[member_id % len(_FIRST_NAMES)]
    last = _LAST_NAMES[member_id % len(_LAST_NAMES)]
    city, country, region, locale, tz, currency = _CITIES[member_id % len(_CITIES)]
    day = 1 + member_id % 28
    return {
        "id": member_id,
        "member_number": f"M-{member_id:010d}",
        "email": f"{first.lower()}.{last.lower().replace(' ', '')}.{member_id}@example-mail.com",
        "first_name": first,
        "last_name": last,
        "display_name": f"{first} {last[0]}.",
        "status": _STATUSES[member_id % len(_STATUSES)],
        "tier": _TIERS[member_id % len(_TIERS)],
        "country": country,
        "locale": locale,
        "timezone": tz,
        "phone": f"+48 601 {member_id % 1000:03d} {member_id % 997:03d}",
        "date_of_birth": f"1987-04-{day:02d}",
        "joined_at": f"2016-03-{day:02d}T10:15:22Z",
        "updated_at": f"2025-11-{day:02d}T08:41:07Z",
        "last_login_at": f"2025-11-{day:02d}T07:02:55Z",
        "renewal_date": f"2026-03-{day:02d}",
        "points_balance": 48_210 + member_id % 1000,
        "lifetime_points": 193_877 + member_id,
        "lifetime_value": 12_873.55 + member_id % 100,
        "version": 42,
        "email_verified": True,
        "address": {
            "line1": f"{12 + member_id % 80} Long Meadow Street",
            "line2": f"Apartment {member_id % 300}",
            "city": city,
            "postal_code": f"{member_id % 100000:05d}",
            "region": region,
            "country": country,
        },
        "preferences": {
            "newsletter": True,
            "sms": False,
            "language": locale[:2],
            "currency": currency,
            "channels": ["email", "push"],
            "interests": ["running", "cycling", "nutrition", "travel"],
        },
        "tags": ["early-adopter", "referral", "family-plan"],
        "memberships": [
            {"club": "city-center", "since": "2016-03-08", "role": "member"},
            {"club": "riverside", "since": "2019-06-21", "role": "guest"},
        ],
        "payment_methods": [
            {
                "type": "card",
                "brand": "visa",
                "last4": f"{member_id % 10000:04d}",
                "exp": "2027-09",
            },
            {"type": "sepa", "bank": "Example Bank", "last4": "0042", "default": False},
        ],
        "recent_orders": [
            {"id": f"O-{member_id}-{n}", "date": f"2025-10-{10 + n:02d}", "total": 39.9 + n}
            for n in range(4)
        ],
        "consents": [
            {"kind": "marketing", "granted": True, "at": "2016-03-08T10:15:22Z"},
            {"kind": "profiling", "granted": False, "at": "2021-01-04T16:20:00Z"},
        ],
        "notes": "Prefers morning classes; asked about the family plan upgrade at renewal. "
        "Moved from the riverside club in 2019.",
    }


@dataclass
class Contender:
    """One measured path. ``units`` is the number of keys one operation serves."""

    key: str
    label: str
    batch: Callable[[int], float]
    units: int = 1
    slice_ops: int = 1
    rounds: list[float] = field(default_factory=list)  # keys per second, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


def _calibrate(contender: Contender, warmup: float, seconds: float, slices: int) -> None:
    """Warm the contender up, doubling the batch until one takes ``warmup`` seconds."""
    ops = 8
    while True:
        elapsed = contender.batch(ops)
        if elapsed >= warmup or ops >= 1 << 24:
            break
        ops *= 2
    rate = ops / max(elapsed, 1e-9)
    contender.slice_ops = max(1, round(rate * seconds / slices))


def measure_interleaved(
    contenders: Sequence[Contender],
    *,
    rounds: int,
    seconds: float,
    slices: int = 5,
    warmup: float = 0.25,
    progress: bool = True,
) -> None:
    """Fill ``contender.rounds`` (keys per second per round); ~``seconds`` per round each."""
    for contender in contenders:
        _calibrate(contender, min(warmup, seconds), seconds, slices)
    count = len(contenders)
    for round_no in range(rounds):
        ops = dict.fromkeys(range(count), 0)
        spent = dict.fromkeys(range(count), 0.0)
        for slice_no in range(slices):
            start = (round_no * slices + slice_no) % count
            for index in [*range(start, count), *range(start)]:
                contender = contenders[index]
                spent[index] += contender.batch(contender.slice_ops)
                ops[index] += contender.slice_ops
        for index, contender in enumerate(contenders):
            contender.rounds.append(ops[index] * contender.units / max(spent[index], 1e-9))
        if progress:
            print(f"round {round_no + 1}/{rounds} done", file=sys.stderr, flush=True)


def paired_ratio(numerator: Contender, denominator: Contender) -> float:
    """Median over rounds of the per-round ratio (both measured in the same round)."""
    return statistics.median(
        a / b for a, b in zip(numerator.rounds, denominator.rounds, strict=True)
    )


def spread(contender: Contender) -> float:
    """Half the min-max range of the rounds, relative to the median."""
    return (max(contender.rounds) - min(contender.rounds)) / 2 / contender.median


def timed_loop(call: Callable[[], object]) -> Callable[[int], float]:
    """A batch function around a no-argument call (for in-process diagnostics)."""

    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            call()
        return time.perf_counter() - started

    return batch
