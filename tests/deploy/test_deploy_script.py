"""scripts/deploy-redis-production.sh in --render-only mode: secrets and rendering, no Docker."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from tests.deploy.conftest import SECRET_NAMES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy-redis-production.sh"
RENDERED = tuple(
    f"{role}/{name}"
    for role in ("cache", "durable")
    for name in ("redis-master.conf", "redis-replica.conf", "sentinel.conf", "users.acl")
)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SECRET_NAMES and not key.startswith(("REDIS_", "DEPLOY_"))
    }
    env["PYTHON"] = sys.executable
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_render_only_generates_private_secrets_and_renders(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = run_script("--render-only", str(out))
    assert result.returncode == 0, result.stderr
    env_file = out / ".env.production"
    assert mode(env_file) == 0o600
    values = read_env(env_file)
    assert set(values) == set(SECRET_NAMES)
    for name, value in values.items():
        assert re.fullmatch(r"[0-9a-f]{64}", value), name  # 256 bits, URL- and config-safe
    assert len(set(values.values())) == len(values)
    for name in RENDERED:
        assert mode(out / name) == 0o600, name
    # Never printed, not even in part.
    for value in values.values():
        assert value[:16] not in result.stdout + result.stderr
    for role in ("cache", "durable"):
        master_conf = (out / role / "redis-master.conf").read_text()
        assert "${" not in master_conf
        assert f"masterauth {values['REDIS_REPLICATION_PASSWORD']}" in master_conf


def test_a_second_run_keeps_the_secrets(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert run_script("--render-only", str(out)).returncode == 0
    env_file = out / ".env.production"
    first_env = env_file.read_bytes()
    first_rendered = {name: (out / name).read_bytes() for name in RENDERED}

    second = run_script("--render-only", str(out))
    assert second.returncode == 0, second.stderr
    assert "0 generated" in second.stdout
    assert env_file.read_bytes() == first_env
    assert {name: (out / name).read_bytes() for name in RENDERED} == first_rendered


def test_a_missing_secret_is_added_and_a_loosened_file_tightened(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert run_script("--render-only", str(out)).returncode == 0
    env_file = out / ".env.production"
    before = read_env(env_file)
    kept = [line for line in env_file.read_text().splitlines() if "FLOWER_PASSWORD" not in line]
    env_file.write_text("\n".join(kept))  # and no final newline, as a hand edit may leave it
    env_file.chmod(0o644)

    result = run_script("--render-only", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 generated" in result.stdout
    after = read_env(env_file)
    assert mode(env_file) == 0o600
    assert set(after) == set(SECRET_NAMES)
    assert after["FLOWER_PASSWORD"] != before["FLOWER_PASSWORD"]
    assert {k: v for k, v in after.items() if k != "FLOWER_PASSWORD"} == {
        k: v for k, v in before.items() if k != "FLOWER_PASSWORD"
    }


def test_bad_arguments_are_refused() -> None:
    for args in (("--render-only",), ("--render-only", ""), ("--bogus",)):
        result = run_script(*args)
        assert result.returncode == 2, args
        assert "usage:" in result.stderr


def test_an_operator_setting_in_the_env_file_is_rendered(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert run_script("--render-only", str(out)).returncode == 0
    env_file = out / ".env.production"
    secrets = read_env(env_file)
    with env_file.open("a") as fh:
        fh.write("REDIS_MAXMEMORY=2gb\n")
    assert run_script("--render-only", str(out)).returncode == 0
    for role in ("cache", "durable"):
        assert "\nmaxmemory 2gb\n" in (out / role / "redis-master.conf").read_text()
    assert {k: v for k, v in read_env(env_file).items() if k in SECRET_NAMES} == secrets
