"""What the management API needs from Settings, with its defaults and the reason for each.

Read from ``management_<field>`` settings where they exist, so the package works before those
settings are added (and a test can build one directly)::

    MANAGEMENT_TOKENS="viewer:<sha256 hex>[:label],operator:<sha256 hex>[:label],..."
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pydantic import SecretStr


@dataclass(frozen=True)
class ManagementConfig:
    # role:sha256hex[:label] entries; empty means no token is valid (closed by default).
    tokens: str = ""
    # Per token and window. Enough for a dashboard polling every second or two and a person;
    # a script looping on /clear is stopped within a minute.
    rate_limit: int = 120
    rate_window_s: int = 60
    # Bodies are small JSON (a warm-up of ids is the largest); anything bigger is refused
    # before it is parsed.
    max_body_bytes: int = 256 * 1024
    # One check of /health may take this long before it counts as failing; the whole answer
    # is bounded by it, whatever hangs.
    check_timeout_s: float = 2.0
    # `celery inspect ping` waits this long for replies; workers answer in milliseconds.
    ping_timeout_s: float = 1.0
    # Beat sends the metrics snapshot every minute: three missed minutes mean it is gone.
    beat_max_age_s: float = 180.0
    # Health thresholds, judged over the last health_window_s of the cluster-wide snapshots:
    # long enough that a warm-up after a restart or a clear (minutes) does not fail it,
    # short enough that a collapse shows within the window.
    health_window_s: int = 600
    max_error_rate: float = 0.05
    min_hit_rate: float = 0.5  # below it for a whole window: evictions, TTLs, a dead warm-up
    min_lookups: int = 100  # below this many lookups the rates say nothing
    max_memory_ratio: float = 0.95  # used_memory / maxmemory: eviction is about to bite
    max_writebehind_lag_s: float = 60.0
    max_replica_lag_s: float = 10.0
    expected_replicas: int = 0  # replicas a standalone master must have; Sentinel knows its own
    # SCAN COUNT of a step of /clear, one script inside Redis (cache.scripts CLEAR_STEP) that
    # every other command waits for: 1,000 keys were 2.7 ms of the server (bench.clear), and
    # during a clear of 1,000,000 keys the replay's member reads had 165 answers over 10 ms;
    # at 250 (0.7 ms a step) 82 (bench.replay).
    clear_batch: int = 250
    # The share of time the clear's steps take: after each it rests (1/duty - 1) times the
    # step's time. Done from the API (before the steps ran inside Redis), one step after
    # another took 5.7 s of the API process's loop at 1,000,000 keys and 0.8 of Redis's core,
    # and every answer of the process waited behind the steps (a hit's p50 went from 0.7 to 3
    # ms). Now the pacing spares Redis: at 0.5 the replay's clear of 1,000,000 keys took 16 to
    # 20 s, at 0.25 36 s (longer than a remote call's 30-s timeout, cachectl/remote.py).
    clear_duty: float = 0.5
    # A burst of refused tokens from one client address or token label: this many within the
    # window (from the first refusal) raises one security alert (refusals.py). A person who
    # mistypes a token a few times stays well below; a script guessing tokens does not.
    refusal_threshold: int = 20
    refusal_window_s: int = 60

    @classmethod
    def from_settings(cls, settings: Any) -> ManagementConfig:
        """The ``management_<field>`` settings that exist; defaults for the others."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = f"management_{field.name}"
            if hasattr(settings, name):
                value = getattr(settings, name)
                values[field.name] = (
                    value.get_secret_value() if isinstance(value, SecretStr) else value
                )
        return cls(**values)
