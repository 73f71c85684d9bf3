"""Smoke test of ``python -m bench.hotpath``: tiny settings, JSON shape, positive figures.

Runs against the shared Redis on 127.0.0.1:6379, database 14, under its own sub-prefix of
``bench:hotpath:`` and checks that the run left none of its keys behind.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from bench import hotpath

CONTENDERS = {
    "redis_get",
    "redis_get_pool",
    "project_get",
    "dogpile_get",
    "cashews_get",
    "redis_mget",
    "redis_mget_json",
    "project_get_many",
    "project_near_get",
    "redispy_csc_get",
    "cashews_csc_get",
}
VERDICT = {
    "hit_vs_redis",
    "hit_target",
    "hit_ok",
    "vs_dogpile",
    "ahead_of_dogpile",
    "vs_cashews",
    "ahead_of_cashews",
    "get_many_slowdown_vs_mget",
    "get_many_target",
    "get_many_ok",
    "get_many_slowdown_vs_mget_json",
    "near_vs_redis",
    "near_target",
    "near_ok",
    "near_vs_redispy_csc",
    "near_vs_cashews_csc",
}


@pytest.fixture
def prefix() -> str:
    return f"{hotpath.DEFAULT_PREFIX}smoke{uuid.uuid4().hex[:8]}:"


def _leftovers(prefix: str) -> list[bytes]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=hotpath.BENCH_DB)
    try:
        return list(client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()


def test_json_report_has_every_figure(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--json", "--rounds", "1", "--seconds", "0.05", "--slices", "2"]
    argv += ["--host", "127.0.0.1", "--port", "6379", "--prefix", prefix]
    assert hotpath.main(argv) == 0

    out = capsys.readouterr().out
    report = json.loads(out)  # the whole of stdout is one JSON object
    assert set(report["results"]) == CONTENDERS - set(report["unavailable"])
    assert set(report["unavailable"]) <= {"redispy_csc_get"}  # it needs Redis >= 7.4
    for name, row in report["results"].items():
        assert row["ops_per_s"] > 0, name
        assert row["us_per_op"] > 0, name
        assert row["ratio"] > 0, name
        assert len(row["rounds_ops_per_s"]) == 1, name
    assert report["results"]["redis_get"]["ratio"] == pytest.approx(1.0)
    assert report["results"]["redis_mget"]["ratio"] == pytest.approx(1.0)
    assert report["results"]["project_get_many"]["per_key"] is True

    verdict = report["verdict"]
    assert set(verdict) == VERDICT
    for name in (
        "hit_vs_redis",
        "vs_dogpile",
        "vs_cashews",
        "get_many_slowdown_vs_mget",
        "near_vs_redis",
    ):
        assert verdict[name] > 0, name

    # One connection per contender, and the project's get really served hits.
    assert set(report["connections"].values()) == {1}
    assert report["project_counters"]["hits"] > 0
    assert report["project_counters"]["misses"] == 0
    assert 1500 <= report["record"]["json_bytes"] <= 1900
    assert _leftovers(prefix) == []


def test_table_output(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rounds", "1", "--seconds", "0.03", "--slices", "1", "--diagnose"]
    argv += ["--host", "127.0.0.1", "--port", "6379", "--prefix", prefix]
    assert hotpath.main(argv) == 0
    out = capsys.readouterr().out
    assert "hit vs redis-py:" in out
    assert "ahead of dogpile:" in out
    assert "ahead of cashews:" in out
    assert "get_many per key vs MGET per key:" in out
    assert "near hit vs redis-py GET:" in out
    assert _leftovers(prefix) == []


def test_prefix_outside_the_bench_namespace_is_refused() -> None:
    with pytest.raises(SystemExit):
        hotpath.main(["--prefix", "membership:"])
