"""scripts/deploy-redis-production.sh in --render-only mode: secrets and rendering, no Docker."""

from __future__ import annotations

import re
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tests.deploy.conftest import SECRET_NAMES, run_deploy_script

RENDERED = tuple(
    f"{role}/{name}"
    for role in ("cache", "durable")
    for name in ("redis-master.conf", "redis-replica.conf", "sentinel.conf", "users.acl")
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
    result = run_deploy_script("--render-only", str(out))
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
    assert run_deploy_script("--render-only", str(out)).returncode == 0
    env_file = out / ".env.production"
    first_env = env_file.read_bytes()
    first_rendered = {name: (out / name).read_bytes() for name in RENDERED}

    second = run_deploy_script("--render-only", str(out))
    assert second.returncode == 0, second.stderr
    assert "0 generated" in second.stdout
    assert env_file.read_bytes() == first_env
    assert {name: (out / name).read_bytes() for name in RENDERED} == first_rendered


def test_a_missing_secret_is_added_and_a_loosened_file_tightened(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert run_deploy_script("--render-only", str(out)).returncode == 0
    env_file = out / ".env.production"
    before = read_env(env_file)
    kept = [line for line in env_file.read_text().splitlines() if "FLOWER_PASSWORD" not in line]
    env_file.write_text("\n".join(kept))  # and no final newline, as a hand edit may leave it
    env_file.chmod(0o644)

    result = run_deploy_script("--render-only", str(out))
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
        result = run_deploy_script(*args)
        assert result.returncode == 2, args
        assert "usage:" in result.stderr


def test_an_operator_setting_in_the_env_file_is_rendered(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert run_deploy_script("--render-only", str(out)).returncode == 0
    env_file = out / ".env.production"
    secrets = read_env(env_file)
    with env_file.open("a") as fh:
        fh.write("REDIS_MAXMEMORY=2gb\n")
    assert run_deploy_script("--render-only", str(out)).returncode == 0
    for role in ("cache", "durable"):
        assert "\nmaxmemory 2gb\n" in (out / role / "redis-master.conf").read_text()
    assert {k: v for k, v in read_env(env_file).items() if k in SECRET_NAMES} == secrets


TLS_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")


def openssl(*args: str) -> str:
    result = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def expires_in_days(cert: Path) -> float:
    end = openssl("x509", "-in", str(cert), "-noout", "-enddate").strip().partition("=")[2]
    expiry = datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    return (expiry - datetime.now(UTC)).total_seconds() / 86400


def test_the_tls_step_makes_a_private_ca_and_certificates(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = run_deploy_script("--render-only", str(out))
    assert result.returncode == 0, result.stderr
    tls = out / "tls"
    assert mode(tls) == 0o700
    for name in TLS_FILES:
        assert mode(tls / name) == (0o600 if name.endswith(".key") else 0o644), name
    ca = str(tls / "ca.crt")
    assert "CA:TRUE" in openssl("x509", "-in", ca, "-noout", "-ext", "basicConstraints")
    for leaf, usage in (("server", "TLS Web Server"), ("client", "TLS Web Client")):
        cert = str(tls / f"{leaf}.crt")
        assert openssl("verify", "-CAfile", ca, cert).strip() == f"{cert}: OK"
        assert usage in openssl("x509", "-in", cert, "-noout", "-ext", "extendedKeyUsage")
        assert 800 < expires_in_days(tls / f"{leaf}.crt") < 830  # renewed well before 2 years
    assert 3600 < expires_in_days(tls / "ca.crt") < 3660
    sans = openssl("x509", "-in", str(tls / "server.crt"), "-noout", "-ext", "subjectAltName")
    for name in ("redis-master", "redis-replica", "redis-sentinel-1", "redis-sentinel-3"):
        assert f"DNS:{name}" in sans
    assert "IP Address:127.0.0.1" in sans
    for name in ("redis-durable-master", "redis-durable-sentinel-3"):
        assert f"DNS:{name}" in sans
    # Both roles' rendered configs name these files (in the container's copy), TLS only.
    for role in ("cache", "durable"):
        master_conf = (out / role / "redis-master.conf").read_text()
        assert "\nport 0\ntls-port 6379\n" in master_conf
        assert "\ntls-replication yes\n" in master_conf
        assert "\ntls-ca-cert-file /data/tls/ca.crt\n" in master_conf
        sentinel_conf = (out / role / "sentinel.conf").read_text()
        assert "\nport 0\ntls-port 26379\n" in sentinel_conf
        assert "\ntls-replication yes\n" in sentinel_conf


def test_a_second_run_keeps_the_certificates_and_replaces_only_what_is_unusable(
    tmp_path: Path,
) -> None:
    out = tmp_path / "deploy"
    assert run_deploy_script("--render-only", str(out)).returncode == 0
    tls = out / "tls"
    first = {name: (tls / name).read_bytes() for name in TLS_FILES}
    (tls / "server.key").chmod(0o644)  # loosened by hand: tightened again

    second = run_deploy_script("--render-only", str(out))
    assert second.returncode == 0, second.stderr
    assert "tls: CA kept" in second.stdout
    assert {name: (tls / name).read_bytes() for name in TLS_FILES} == first
    assert mode(tls / "server.key") == 0o600

    # A missing client certificate is made again; the CA and the server's stay.
    (tls / "client.crt").unlink()
    third = run_deploy_script("--render-only", str(out))
    assert third.returncode == 0, third.stderr
    assert "tls: client certificate generated" in third.stdout
    assert (tls / "client.crt").read_bytes() != first["client.crt"]
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        assert (tls / name).read_bytes() == first[name], name
    # Renewal: a certificate that expires within the window (here 900 days) is replaced.
    renewed = run_deploy_script("--render-only", str(out), DEPLOY_TLS_RENEW_DAYS="900")
    assert renewed.returncode == 0, renewed.stderr
    assert "tls: server certificate generated" in renewed.stdout
    assert "tls: CA kept" in renewed.stdout
    assert (tls / "ca.crt").read_bytes() == first["ca.crt"]


def test_extra_server_names_replace_only_the_server_certificate(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert run_deploy_script("--render-only", str(out)).returncode == 0
    tls = out / "tls"
    first = {name: (tls / name).read_bytes() for name in TLS_FILES}

    bad = run_deploy_script("--render-only", str(out), DEPLOY_TLS_EXTRA_NAMES="redis.example")
    assert bad.returncode == 2
    assert "DEPLOY_TLS_EXTRA_NAMES" in bad.stderr
    assert {name: (tls / name).read_bytes() for name in TLS_FILES} == first

    names = "DNS:redis.example,IP:10.0.0.5"
    added = run_deploy_script("--render-only", str(out), DEPLOY_TLS_EXTRA_NAMES=names)
    assert added.returncode == 0, added.stderr
    sans = openssl("x509", "-in", str(tls / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert "DNS:redis.example" in sans and "IP Address:10.0.0.5" in sans
    assert "DNS:redis-master" in sans
    for name in ("ca.crt", "client.crt", "client.key"):
        assert (tls / name).read_bytes() == first[name], name
    # The same names again: nothing to do.
    again = run_deploy_script("--render-only", str(out), DEPLOY_TLS_EXTRA_NAMES=names)
    assert "tls: server certificate kept" in again.stdout
