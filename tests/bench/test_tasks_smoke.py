"""Smoke test of ``python -m bench.tasks --json`` at a tiny size: the warm-up measured with one
and two worker processes on both brokers (the stack's Redis and a RabbitMQ vhost of the run's
own), every figure there and positive, and the run's vhost gone after it."""

from __future__ import annotations

import json

import pytest

from bench import _rabbitmq, tasks

pytestmark = pytest.mark.slow

# CPU time comes from /proc in clock ticks (10 ms): at 3,000 members a process's share could
# read as 0 ticks. 12,000 gives redis-server, the cheapest, several ticks per run.
MEMBERS = 12_000
CHUNK = 4_000  # three chunks: the chord and both processes are exercised


def _vhosts() -> set[str]:
    return set(_rabbitmq.rabbitmqctl("list_vhosts", "--quiet").split())


def test_the_warm_up_is_measured_on_both_brokers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--json", "--members", str(MEMBERS), "--chunk-size", str(CHUNK)]
    assert tasks.main([*argv, "--naive", "50", "--import-rows", "100"]) == 0
    report = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object

    assert report["broker"] == "redis"
    assert "brokers_missing" not in report
    assert set(report["brokers"]) == {"redis", "amqp"}
    for broker, on in report["brokers"].items():
        for run, processes in ((on["warmup_1_process"], 1), (on["warmup"], 2)):
            assert run["processes"] == processes, broker
            assert run["written"] == MEMBERS, broker
            assert run["chunks"] == MEMBERS // CHUNK, broker
            assert run["keys_per_second"] > 0, broker
            assert all(cost > 0 for cost in run["cpu"]["cpu_us_per_key"].values()), broker
        assert on["speedup"] > 0 and on["speedup_ceiling"] > 0, broker
        assert on["vs_redis_benchmark"] > 0, broker
    # The top-level figures are the Redis broker's, where they always were.
    assert report["warmup"] == report["brokers"]["redis"]["warmup"]
    assert report["warmup_1_process"] == report["brokers"]["redis"]["warmup_1_process"]
    assert report["verdict"]["speedup"] == report["brokers"]["redis"]["speedup"]
    assert report["warmup_all"]["written"] > MEMBERS  # the members and the aggregates
    assert report["redis_benchmark"]["sets_per_second"] > 0
    assert report["invalidation"]["read_is_fresh"] is True

    vhost = report["brokers"]["amqp"]["vhost"]
    assert vhost.startswith("bench-tasks-")
    assert vhost not in _vhosts()
