"""A bad setting stops every entry point (API, worker, beat, Flower, cachectl) at start-up with
one line naming the variable and exit code 2, never a traceback. The check is the settings
loader's (config.load_settings_or_exit), so the issue's case (a repeated token label) is tried
on every entry point, and every structured setting on the lightest one (Flower's launcher,
which imports little before it loads the settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIGEST_A, DIGEST_B = "a" * 64, "b" * 64

ENTRY_POINTS = {
    "api": ["-m", "api_stub", "--port", "1"],
    "worker": ["-m", "celery", "-A", "workers.app", "worker", "--pool", "solo"],
    "beat": ["-m", "celery", "-A", "workers.app", "beat"],
    "flower": ["-m", "workers.flower"],
    "cachectl": ["-m", "cachectl.main", "check"],
}

# Every structured setting (lists, maps, URLs, enums; config/settings.py) with a bad value.
STRUCTURED = [
    ("MANAGEMENT_TOKENS", f"admin:{DIGEST_A}:ops,viewer:{DIGEST_B}:ops"),  # repeated label
    ("MANAGEMENT_TOKENS", f"admin:{DIGEST_A},viewer:{DIGEST_A}"),  # repeated digest
    ("MANAGEMENT_TOKENS", f"root:{DIGEST_A}"),  # unknown role
    ("MANAGEMENT_TOKENS", "admin:not-a-digest"),
    ("REDIS_URL", "http://127.0.0.1:6379/0"),
    ("REDIS_URL", "redis://127.0.0.1:notaport/0"),
    ("REDIS_SENTINELS", "127.0.0.1:26379,sentinel-without-port"),
    ("REDIS_CLUSTER_NODES", "127.0.0.1:7000,127.0.0.1:99999"),
    ("REDIS_KEY_PREFIX", "members*"),
    ("CELERY_BROKER_URL", "rabbit://guest:guest@127.0.0.1:5672//"),
    ("CELERY_RESULT_BACKEND", "nowhere://127.0.0.1/2"),
    ("DATABASE_URL", "postgres ql://127.0.0.1/members"),
    ("DATABASE_URL", "oracle9://127.0.0.1/members"),
    ("ALERT_WEBHOOK_URL", "ftp://hooks.example/T0/s3cr3t"),
    ("ENVIRONMENT", "staging"),
    ("FLOWER_USER", "ops,admin"),
    ("FLOWER_PASSWORD", "one,two"),
]
SECRETS = ("s3cr3t", DIGEST_A, DIGEST_B, "guest:guest")

CASES = [
    pytest.param(variable, value, "flower", id=f"{variable}-{n}")
    for n, (variable, value) in enumerate(STRUCTURED)
] + [
    pytest.param(*STRUCTURED[0], entry, id=f"repeated-label-{entry}")
    for entry in ENTRY_POINTS
    if entry != "flower"  # above
]


def _run(entry: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *ENTRY_POINTS[entry]],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        cwd=cwd,  # no .env: the environment given is all the process reads
        timeout=60,
    )


@pytest.mark.parametrize(("variable", "value", "entry"), CASES)
def test_a_bad_setting_stops_the_entry_point_with_one_line(
    variable: str, value: str, entry: str, tmp_path: Path
) -> None:
    result = _run(entry, {variable: value}, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: invalid setting {variable}:"), lines[0]
    assert result.stdout.strip() == "", result.stdout
    assert not any(secret in lines[0] for secret in SECRETS), lines[0]


def test_good_structured_values_pass(tmp_path: Path) -> None:
    """The same variables, well formed, load (cachectl config shows them, secrets masked)."""
    good = {
        "MANAGEMENT_TOKENS": f"admin:{DIGEST_A}:ops,viewer:{DIGEST_B}",
        "REDIS_SENTINELS": "127.0.0.1:26379,127.0.0.1:26380",
        "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/test",
        "CELERY_RESULT_BACKEND": "db+postgresql://root@127.0.0.1:5432/results",
        "DATABASE_URL": "postgresql+psycopg://root@127.0.0.1:5432/members",
        "ENVIRONMENT": "test",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "cachectl.main", "config", "--json"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **good},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"redis_mode": "sentinel"' in shown.stdout
    assert DIGEST_A not in shown.stdout and "guest:guest" not in shown.stdout
