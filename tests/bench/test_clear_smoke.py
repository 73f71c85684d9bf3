"""bench.clear at a small size: every contender deletes every key, and the figures are there."""

from __future__ import annotations

from bench.clear import CONTENDERS, SPARED, run


def test_the_clear_bench_measures_every_contender() -> None:
    result = run(keys=2 * SPARED + 2_000, rounds=1)  # raises when a contender leaves a key
    assert set(result["contenders"]) == set(CONTENDERS)
    for figures in result["contenders"].values():
        assert figures["wall_s"] > 0 and figures["cpu_s"] >= 0
        assert figures["cpu_ms_per_1000_keys"] >= 0
    assert result["contenders"]["this project (script step)"]["cpu_ratio_to_project"] == 1.0
