"""Smoke test of ``python -m bench.writebehind --json`` at a tiny size: every figure is there
and positive, and the run left no keys behind in its Redis database."""

from __future__ import annotations

import json

import pytest
import redis

from bench import writebehind

pytestmark = pytest.mark.slow


def test_the_benchmark_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--json", "--seconds", "0.3", "--threads", "2", "--members", "2000"]
    small = ["--backlog", "4000", "--lag-seconds", "1", "--naive-tasks", "100", "--procs", "2"]
    small += ["--connections", "4", "--partitions", "2"]
    small += ["--partition-backlog", "2000", "--http-seconds", "1"]
    assert writebehind.main([*argv, *small]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in (
        "accepted_per_s", "accepted_async_1proc_per_s", "accepted_threads_per_s",
        "accepted_direct_per_s", "accepted_batch10_per_s", "xadd_floor_per_s",
        "flush_events_per_s", "flush_rows_per_s", "flush_partitioned_rows_per_s",
        "db_apply_rows_per_s", "copy_rows_per_s",
        "naive_insert_commit_per_s", "naive_celery_task_per_s", "lag_p50_s", "lag_p99_s",
    ):  # fmt: skip
        assert report[name] > 0, name
    assert set(report["targets_met"]) == {
        "accepted_per_s", "flush_rows_per_s", "lag_p99_s", "http_single_vs_get",
    }  # fmt: skip
    # Every partition count flushed its whole backlog, on one Redis and on the Cluster, where
    # more partitions reach more shards.
    by_parts = report["flush_by_partitions"]
    for where in ("standalone", "cluster"):
        assert [run["partitions"] for run in by_parts[where]] == [1, 2, 4]
        assert all(run["rows_per_s"] > 0 and run["backlog_left"] == 0 for run in by_parts[where])
    assert [run["shards"] for run in by_parts["cluster"]] == [1, 2, 3]
    http = report["http"]
    for name in ("member_get", "activity_single", "activity_batch10"):
        assert http[name]["rps"] > 0 and http[name]["errors"] == 0, name
    client = redis.Redis(db=writebehind.BENCH_DB)
    assert not list(client.scan_iter(match="bench:wb:*", count=1000))
    client.close()


def test_only_http_reports_the_http_part_with_its_full_run_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--json", "--only", "http", "--members", "2000", "--http-seconds", "1"]
    argv += ["--http-rounds", "2"]
    assert writebehind.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"load_average", "http", "targets_met"}
    http = report["http"]
    for name in ("member_get", "activity_single", "activity_batch10"):
        assert http[name]["rps"] > 0 and http[name]["errors"] == 0, name
    assert http["activity_batch10"]["events_per_s"] > http["activity_batch10"]["rps"]
    assert report["targets_met"] == {"http_single_vs_get": http["target_met"]}
    # Two rounds, the figures those of the median one (of two: the better ratio).
    assert http["rounds"] == 2 and len(http["by_round"]) == 2
    assert http["single_vs_get"] == max(one["single_vs_get"] for one in http["by_round"])
    client = redis.Redis(db=writebehind.BENCH_DB)
    assert not list(client.scan_iter(match="bench:wb:*", count=1000))
    client.close()
