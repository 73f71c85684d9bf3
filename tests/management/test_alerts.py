"""The alerting rules (deploy/prometheus/alerts.yml): valid, unit-tested with promtool, and
written over series the API really exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_stub.management import PREFIX
from api_stub.management import figures as figures_
from api_stub.management.prometheus import render
from tests.management.conftest import REPO, Mgmt

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"

pytestmark = pytest.mark.anyio


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 14 rules found" in checked.stdout


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    assert alerts == tested


async def test_the_rules_read_series_the_api_exports(mgmt: Mgmt) -> None:
    used = set(re.findall(r"membership_cache_[a-z_]+", RULES.read_text()))
    # The figures of a live app, with what appears only on a real deployment: a replica
    # and a metrics snapshot.
    live = await figures_.figures(mgmt.runtime)
    live["redis"]["replicas"] = [
        {"address": "10.0.0.2:6379", "state": "online", "lag_s": 0, "behind_bytes": 0}
    ]
    live["snapshot_taken_at"] = live["taken_at"] - 30
    text = render(live, mgmt.runtime.cache.core.snapshot()).decode()
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert used <= exported, used - exported
    # The scrape itself carries every series the rules need that a test app can have.
    answer = await mgmt.call("GET", f"{PREFIX}/prometheus", "viewer")
    scraped = {
        sample.name
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    conditional = {
        "membership_cache_redis_replica_lag_seconds",
        "membership_cache_snapshot_age_seconds",
        "membership_cache_writebehind_lag_seconds",
        "membership_cache_writebehind_backlog",
        "membership_cache_writebehind_dead_letters",
    }
    assert used - conditional <= scraped, (used - conditional) - scraped
