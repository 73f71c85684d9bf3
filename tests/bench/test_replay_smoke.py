"""Smoke test of ``python -m bench.replay`` at a tiny scale: both passes run against the whole
platform (API, worker, beat; a private Sentinel deployment whose master is killed; a private
broker; copies of one seeded database), and the JSON, the table and the HTML report carry
every figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import replay

ROUTES = {"member", "member_list", "dashboard", "growth", "demographics", "lookup"}


def test_a_tiny_day_replayed_with_the_cache_on_and_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8 s: five member writes come before the master's kill (at 45% of the day), so the
    # monitor samples and checks some whatever the failover's length (with 4 s, all four
    # could fall inside it on a loaded machine, and nothing was sampled).
    argv = ["--json", "--members", "500", "--duration", "8", "--peak-rps", "40"]
    argv += ["--windows", "0.5,1", "--down-after-ms", "1000", "--import-rows", "20"]
    argv += ["--floor", "--out", str(tmp_path)]
    assert replay.main(argv) == 0

    report = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    assert json.loads((tmp_path / "replay.json").read_text())["verdict"] == report["verdict"]
    # The floor: the same day without its reads, cache on. Fewer transactions than the
    # whole day with the cache, none of them a read's.
    floor = report["passes"]["floor"]
    assert "member" not in floor["routes"] and floor["routes"]["member_write"]["requests"] > 0
    verdict = report["verdict"]
    assert 0 < verdict["db_transactions_floor"] < report["passes"]["on"]["db"]["transactions"]
    assert 0 < verdict["db_ratio_floor"] < 1 and verdict["db_ratio_reads"] is not None
    for name in ("on", "off"):
        found = report["passes"][name]
        assert set(found["routes"]) >= ROUTES | {"member_write"}, name
        assert all(row["requests"] > 0 for row in found["routes"].values()), name
        # The master was killed and the Sentinels promoted the replica during the replay.
        assert found["incidents"]["kill"] < found["incidents"]["promoted"], name
        # ... and the killed node, rejoined as a replica, synced every key again.
        assert found["incidents"]["promoted"] < found["incidents"]["resynced"], name
        assert found["recovery_window"][0] == found["failover_window"][0], name
        assert found["recovery_window"][1] >= found["failover_window"][1], name
        # The clear was sent (at this scale it may meet the failover: then it is refused).
        assert {"cleared", "clear_failed"} & set(found["incidents"]), name
        assert found["db"]["transactions"] > 0, name
        # The platform's start (and the warm-up before the cache-on day) counted apart.
        assert found["db"]["setup_transactions"] > 0, name
        assert len(found["imports"]) == 3 and all(i["status"] == 201 for i in found["imports"])
        # Where the CPU went: the API, the worker, the databases and the replayer all worked.
        cpu = found["cpu"]["by_role_s"]
        assert all(cpu[role] > 0 for role in ("api", "worker", "postgres", "redis", "replayer"))
        assert len(found["cpu"]["over_time"]["t"]) == len(found["cpu"]["over_time"]["api"]) > 0
    on, off = report["passes"]["on"], report["passes"]["off"]
    assert on["hit_rate"] is not None and on["hit_rate"] > 0  # the cache served hits
    assert off["hit_rate"] is None  # no X-Cache: every read was the database's
    # Every write sampled with the cache on, and checked: all of them unless a check fell
    # in the failover (a check claimed on the old master may be lost with it).
    consistency = on["consistency"]
    assert consistency["available"] and consistency["sampled"] > 0, consistency
    windows = consistency["windows"]
    for window in ("0.5", "1"):
        assert windows[window]["pending"] == 0, consistency
        assert windows[window]["checked"] <= consistency["sampled"], consistency
    assert windows["0.5"]["checked"] + windows["1"]["checked"] > 0, consistency
    assert report["verdict"]["consistent_first_window_checked"] == windows["0.5"]["checked"]
    assert set(report["verdict"]["cached_p99_ms"]) == ROUTES
    assert set(report["verdict"]["cached_p99_outside_recovery_ms"]) == ROUTES
    # Each path's first answer counted apart: one per list variant the day read.
    assert set(report["verdict"]["cached_p99_after_first_reads_ms"]) == ROUTES
    lists = on["routes"]["member_list"]
    assert 0 < lists["first_reads"] <= min(lists["requests"], 20)  # 5 pages of 4 tiers

    page = (tmp_path / "replay.html").read_text()
    assert "uPlot" in page and "<script src" not in page  # self-contained
    assert "db ratio on/off" in report["table"]

    # For a post-mortem: every answer, the client's own loop lag, each process's log.
    for name, found in report["passes"].items():
        answers = (tmp_path / f"answers-{name}.csv").read_text().splitlines()
        assert answers[0].endswith(",path") and "/api/v1/" in answers[1]
        assert len(answers) == 1 + sum(row["requests"] for row in found["routes"].values())
        assert found["client_loop_lag"]["max_ms"] is not None, name
        assert {"api.log", "worker.log", "beat.log"} <= {
            log.name for log in (tmp_path / "logs" / name).iterdir()
        }, name
    assert (tmp_path / "logs" / "redis" / "sentinel-0.log").stat().st_size > 0
