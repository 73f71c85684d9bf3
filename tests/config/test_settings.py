from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cache import MISS, DataType, build_cache
from config import ConfigError, load_settings
from tests.support.redis_procs import make_tls_files

DESIGN_DEFAULTS = {
    "redis_host": "localhost",
    "redis_port": 6379,
    "redis_db": 0,
    "redis_key_prefix": "membership:",
    "redis_default_ttl": 1800,
    "cache_enabled": True,
    "cache_analytics_ttl": 3600,
    "cache_statistics_ttl": 1800,
    "cache_member_ttl": 900,
    "cache_lookup_ttl": 86400,
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [*DESIGN_DEFAULTS, "redis_password", "redis_url", "redis_sentinels"]:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_designs() -> None:
    settings = load_settings()
    for name, value in DESIGN_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert settings.redis_password.get_secret_value() == ""
    assert settings.redis_mode == "standalone"


def test_env_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("REDIS_PORT=6400\nCACHE_MEMBER_TTL=60\n")
    monkeypatch.setenv("CACHE_MEMBER_TTL", "120")
    settings = load_settings()
    assert settings.redis_port == 6400
    assert settings.cache_member_ttl == 120


def test_example_env_lists_every_design_variable() -> None:
    example = (Path(__file__).parents[2] / ".env.example").read_text()
    for name in [*DESIGN_DEFAULTS, "redis_password"]:
        assert f"\n{name.upper()}=" in "\n" + example, name


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_PORT", "abc"),
        ("CACHE_MEMBER_TTL", "-5"),
        ("REDIS_DEFAULT_TTL", "0"),
        ("REDIS_PORT", "70000"),
        ("CACHE_ENABLED", "maybe"),
        ("REDIS_SENTINELS", "host-no-port"),
        ("REDIS_KEY_PREFIX", "bad*prefix"),
        ("ALERT_WEBHOOK_URL", "ftp://hooks.example/x"),
        ("ALERT_WEBHOOK_URL", "https:///no-host"),
        ("ALERT_WEBHOOK_MAX_RETRIES", "-1"),
        ("MANAGEMENT_REFUSAL_THRESHOLD", "0"),
    ],
)
def test_invalid_value_is_one_line_naming_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert variable in message


def test_a_bad_webhook_url_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat webhook carries its credential in the URL: the error and `config` hide it."""
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "ftp://hooks.example/T0/B0/s3cr3t")
    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_URL") as caught:
        load_settings()
    assert "s3cr3t" not in str(caught.value)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", " https://hooks.example/T0/B0/s3cr3t ")
    settings = load_settings()
    assert settings.alert_webhook_url.get_secret_value() == "https://hooks.example/T0/B0/s3cr3t"
    assert "s3cr3t" not in repr(settings.masked())
    monkeypatch.delenv("ALERT_WEBHOOK_URL")
    assert load_settings(_env_file=None).alert_webhook_url.get_secret_value() == ""  # off


def test_cli_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cachectl.main", "config"],
        env={"REDIS_PORT": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "REDIS_PORT" in lines[0], result.stderr


def test_cli_config_masks_secrets(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cachectl.main", "config", "--json"],
        env={
            "REDIS_PASSWORD": "s3cret-pw",
            "CELERY_BROKER_URL": "redis://u:brokerpw@h:1/0",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout and "brokerpw" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["redis_password"] == "********"
    assert shown["celery_broker_url"] == "redis://u:****@h:1/0"


def test_urls_derive_from_parts() -> None:
    settings = load_settings(redis_password="p@ss word", redis_db=3, redis_tls=True)
    assert settings.redis_url_for() == "rediss://:p%40ss%20word@localhost:6379/3"
    assert settings.redis_url_for(db=1).endswith("/1")


def test_cache_disabled_reads_go_to_the_source_and_writes_skip() -> None:
    # A port nothing listens on: with the cache disabled it must never be tried.
    settings = load_settings(cache_enabled=False, redis_host="127.0.0.1", redis_port=1)
    cache = build_cache(settings)
    calls = []
    started = time.perf_counter()
    for member_id in range(100):
        key = cache.keys.member(member_id)
        assert cache.get(key, DataType.MEMBER) is MISS
        assert cache.get_or_load(key, lambda: calls.append(1) or "v", DataType.MEMBER) == "v"
        assert cache.set(key, "x", DataType.MEMBER) is False
        assert cache.write_through(key, "x", 1, DataType.MEMBER) is False
        assert cache.delete(key) == 0
    assert cache.get_many(["a", "b"]) == [MISS, MISS]
    elapsed = time.perf_counter() - started
    assert len(calls) == 100
    assert cache.metrics.breaker_skips == 0 and cache.breaker.state == "closed"
    assert elapsed < 0.5
    cache.close()


def test_production_refuses_an_unauthenticated_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="REDIS_PASSWORD"):
        load_settings()
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    assert load_settings().environment == "production"


def test_tls_files_must_exist_and_go_together(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with pytest.raises(ConfigError, match="REDIS_TLS_CA_FILE") as caught:
        load_settings(redis_tls=True, redis_tls_ca_file=str(tmp_path / "missing.crt"))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE"):
        load_settings(redis_tls=True, redis_tls_cert_file=str(tls.client_cert))
    options = load_settings(
        redis_url="rediss://cache.internal:6380/0", redis_tls_ca_file=str(tls.ca_cert)
    ).redis_tls_options
    assert options.enabled  # rediss:// alone turns TLS on
    assert options.redis_kwargs()["ssl_ca_certs"] == str(tls.ca_cert)
    assert options.redis_kwargs()["ssl_check_hostname"] is True
    assert load_settings().redis_tls_options.redis_kwargs() == {}


def test_durable_role_is_the_cache_role_until_configured() -> None:
    settings = load_settings(redis_host="cache.internal", redis_password="pw")
    assert settings.durable_redis is None and settings.durable_is_cache
    assert settings.redis_role("durable") == settings.redis_role("cache")
    assert settings.redis_role("durable").url_for() == "redis://:pw@cache.internal:6379/0"


def test_durable_role_from_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "cache.internal")
    monkeypatch.setenv("DURABLE_REDIS_HOST", "durable.internal")
    monkeypatch.setenv("DURABLE_REDIS_PORT", "6390")
    monkeypatch.setenv("DURABLE_REDIS_PASSWORD", "durable-secret")
    monkeypatch.setenv("DURABLE_REDIS_SENTINEL_MASTER", "durable")
    monkeypatch.setenv("DURABLE_REDIS_SENTINELS", "10.0.0.1:26390,10.0.0.2:26390")
    settings = load_settings()
    durable = settings.redis_role("durable")
    assert not settings.durable_is_cache
    assert (durable.host, durable.port, durable.sentinel_master) == (
        "durable.internal",
        6390,
        "durable",
    )
    assert durable.mode == "sentinel" and durable.sentinel_hosts[1] == ("10.0.0.2", 26390)
    assert settings.redis_role("cache").host == "cache.internal"
    assert settings.redis_mode == "standalone"  # the cache role's, unchanged
    shown = settings.masked()
    assert shown["durable_redis"]["password"] == "********"  # type: ignore[index]
    assert shown["durable_redis_mode"] == "sentinel"
    assert "durable-secret" not in json.dumps(shown)


def test_durable_variables_by_name_fill_the_group() -> None:
    settings = load_settings(
        durable_redis_host="durable.internal", durable_redis_db="4", _env_file=None
    )
    assert settings.redis_role("durable").url_for() == "redis://durable.internal:6379/4"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("DURABLE_REDIS_PORT", "sixty", "DURABLE_REDIS_PORT"),
        ("DURABLE_REDIS_SENTINELS", "nohostport", "DURABLE_REDIS_SENTINELS"),
        ("DURABLE_REDIS_URL", "http://x", "DURABLE_REDIS_URL"),
        ("DURABLE_REDIS_CLUSTER_NODES", "10.0.0.1:7000", "DURABLE_REDIS_CLUSTER_NODES"),
    ],
)
def test_a_bad_durable_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^invalid setting {named}:"):
        load_settings()


def test_production_needs_the_durable_role_authenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_REDIS_HOST", "durable.internal")
    with pytest.raises(ConfigError, match="DURABLE_REDIS_PASSWORD"):
        load_settings(environment="production", redis_password="cache-pw")
    monkeypatch.setenv("DURABLE_REDIS_PASSWORD", "durable-pw")
    assert load_settings(environment="production", redis_password="cache-pw").environment == (
        "production"
    )
