"""docker-compose.yml passes ``docker-compose config`` and has the shape of the design.

Needs Debian's docker-compose (or the ``docker compose`` plugin); .ci/run installs it. There
is no Docker engine here: ``config`` validates and interpolates the file without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import celeryconfig
from config import Settings, load_settings
from config.redis_role import RedisRole
from config.settings import DURABLE_PREFIX
from tests.deploy.conftest import SECRET_NAMES, generate_secrets
from tests.support.redis_procs import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
REDIS_SERVICES = ("redis-master", "redis-replica", *(f"redis-sentinel-{n}" for n in (1, 2, 3)))
DURABLE_SERVICES = tuple(name.replace("redis-", "redis-durable-") for name in REDIS_SERVICES)
APP_SERVICES = ("api", "worker", "beat", "flower")
SERVICES = {
    *REDIS_SERVICES,
    *DURABLE_SERVICES,
    "redis-commander",
    "postgres",
    "migrate",
    "rabbitmq",
    *APP_SERVICES,
}


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    pytest.fail("docker-compose is not installed (apt-get install docker-compose)")


def run_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    # Compose lets the environment override --env-file: give it none of the stack's names.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SECRET_NAMES
        and not key.startswith(("REDIS_", "DURABLE_", "CELERY_", "DEPLOY_", "COMPOSE_"))
    }
    return subprocess.run(
        [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def secrets_env() -> dict[str, str]:
    return generate_secrets()


@pytest.fixture(scope="module")
def config(
    tmp_path_factory: pytest.TempPathFactory, secrets_env: dict[str, str], deploy_tls: TlsFiles
) -> Any:
    env_file = tmp_path_factory.mktemp("compose") / ".env.production"
    # The deploy script exports DEPLOY_TLS_DIR; here it names the certificates it made.
    values = {**secrets_env, "DEPLOY_TLS_DIR": str(deploy_tls.ca_cert.parent)}
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    result = run_config(env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, published, target) of each port, from docker-compose 1 ("ip:pub:target/tcp")
    or docker compose 2 (mappings) output."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            host_ip, published, target = port.split("/")[0].split(":")
            out.append((host_ip, int(published), int(target)))
        else:
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
    return out


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of each volume, from either output format ("source:target:mode")."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            out[target] = source
        else:
            out[volume["target"]] = volume["source"]
    return out


def test_compose_config_passes_with_every_service(config: Any) -> None:
    assert set(config["services"]) == SERVICES


def test_every_long_running_service_has_a_health_check(config: Any) -> None:
    for name, service in config["services"].items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name


def test_services_wait_for_what_they_need_to_be_healthy(config: Any) -> None:
    services = config["services"]
    for name in ("api", "worker", "beat"):
        depends = services[name]["depends_on"]
        for sentinel in (*REDIS_SERVICES[2:], *DURABLE_SERVICES[2:]):
            assert depends[sentinel]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services["flower"]["depends_on"]["worker"]["condition"] == "service_healthy"
    assert services["redis-replica"]["depends_on"]["redis-master"]["condition"] == (
        "service_healthy"
    )
    for sentinel in REDIS_SERVICES[2:]:
        assert set(services[sentinel]["depends_on"]) == {"redis-master", "redis-replica"}
    for sentinel in DURABLE_SERVICES[2:]:
        assert set(services[sentinel]["depends_on"]) == set(DURABLE_SERVICES[:2])


def test_each_redis_role_runs_from_its_own_rendered_configs(config: Any) -> None:
    services = config["services"]
    for names, role in ((REDIS_SERVICES, "cache"), (DURABLE_SERVICES, "durable")):
        for name in names:
            rendered = mounts(services[name])["/etc/redis/rendered"]
            assert Path(rendered).name == role, name
            assert mounts(services[name])["/data"] in config["volumes"], name
    data = [mounts(services[n])["/data"] for n in (*REDIS_SERVICES, *DURABLE_SERVICES)]
    assert len(set(data)) == len(data)  # no two servers share a volume
    # Each trio of Sentinels checks the quorum of its own role's master.
    assert services["redis-sentinel-1"]["environment"]["SENTINEL_MASTER_NAME"] == "mymaster"
    assert services["redis-durable-sentinel-1"]["environment"]["SENTINEL_MASTER_NAME"] == (
        "durable"
    )


def test_only_the_api_and_loopback_uis_are_published(config: Any) -> None:
    services = config["services"]
    for name in (*REDIS_SERVICES, *DURABLE_SERVICES, "rabbitmq", "postgres", "worker", "beat"):
        assert "ports" not in services[name], name
    commander = services["redis-commander"]
    assert ports(commander) == [("127.0.0.1", 8081, 8081)]
    assert commander["environment"]["HTTP_USER"]
    assert commander["environment"]["HTTP_PASSWORD"]
    assert ports(services["flower"]) == [("127.0.0.1", 5555, 5555)]
    assert ports(services["api"]) == [("0.0.0.0", 5000, 5000)]
    # Scalable: nothing that two worker containers could not share.
    assert "container_name" not in services["worker"]


def test_data_lives_in_named_volumes(config: Any) -> None:
    services = config["services"]
    for name, path in (
        ("redis-master", "/data"),
        ("redis-replica", "/data"),
        ("redis-sentinel-1", "/data"),
        ("postgres", "/var/lib/postgresql/data"),
        ("beat", "/var/lib/beat"),
    ):
        assert mounts(services[name])[path] in config["volumes"], name


def test_the_worker_sees_every_redis_nodes_dump_for_the_daily_backup(config: Any) -> None:
    """The worker's Redis user may not run CONFIG: the dumps come from mounted volumes, one a
    node of the durable role (the role the job saves), since either may be master; copies go
    to a volume of their own."""
    services = config["services"]
    worker, environment = services["worker"], services["worker"]["environment"]
    seen = mounts(worker)
    durable = {
        mounts(services[n])["/data"] for n in ("redis-durable-master", "redis-durable-replica")
    }
    dumps = {seen[str(Path(path).parent)] for path in environment["REDIS_DUMP_FILES"].split(",")}
    assert dumps == durable
    assert seen[environment["BACKUP_DIR"]] in config["volumes"]
    # The second copy on a volume of its own, not the first copy's.
    second = seen[environment["BACKUP_COPY_DIR"]]
    assert second in config["volumes"] and second != seen[environment["BACKUP_DIR"]]


def test_the_app_image_carries_the_redis_nodes_own_server(config: Any) -> None:
    """The backup job and `cachectl restore` load the nodes' RDB files: a server of the
    nodes' version must be in the app image."""
    image = config["services"]["redis-master"]["image"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"COPY --from={image} /usr/local/bin/redis-server " in dockerfile


def test_the_app_settings_come_out_in_sentinel_mode(
    config: Any, secrets_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment compose hands the API and the worker is valid for config.Settings."""
    for name, user, password in (
        ("api", "app", "REDIS_APP_PASSWORD"),
        ("worker", "worker", "REDIS_WORKER_PASSWORD"),
    ):
        environment = config["services"][name]["environment"]
        unknown = {
            key
            for key in environment
            if key.lower() not in Settings.model_fields
            and key.lower().removeprefix(DURABLE_PREFIX) not in RedisRole.model_fields
        }
        assert unknown == set(), name
        # The certificate files the settings name are the ones compose mounts there.
        mounted = mounts(config["services"][name])
        tls_files = {
            key: mounted[value]
            for key, value in environment.items()
            if key.removeprefix("DURABLE_").startswith("REDIS_TLS_")
        }
        files = {"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"}
        assert set(tls_files) == files | {f"DURABLE_{key}" for key in files}
        with monkeypatch.context() as patch:
            for key, value in {**environment, **tls_files}.items():
                patch.setenv(key, str(value))
            settings = load_settings(_env_file=None)
        assert settings.environment == "production"
        assert settings.redis_mode == "sentinel"
        assert len(settings.sentinel_hosts) == 3
        assert settings.writebehind_replicas == 1  # no acknowledged event lost to a failover
        assert settings.writebehind_partitions == 2
        assert settings.redis_username == user
        assert settings.redis_password.get_secret_value() == secrets_env[password]
        sentinel_password = secrets_env["REDIS_SENTINEL_PASSWORD"]
        assert settings.redis_sentinel_password.get_secret_value() == sentinel_password
        assert settings.redis_tls_options.enabled
        durable = settings.redis_role("durable")
        assert durable.mode == "sentinel" and durable.sentinel_master == "durable"
        assert {host for host, _ in durable.sentinel_hosts} == {
            f"redis-durable-sentinel-{n}" for n in (1, 2, 3)
        }
        # The durable role holds the broker: every process is "worker" there.
        assert durable.username == "worker"
        assert durable.password.get_secret_value() == secrets_env["REDIS_WORKER_PASSWORD"]
        broker = celeryconfig.from_settings(settings)
        # Celery follows the durable master through its Sentinels, as the ACL user "worker".
        assert broker["broker_url"].count("sentinel://worker:") == 3
        assert broker["broker_url"].count("@redis-durable-sentinel-") == 3
        assert broker["broker_transport_options"]["master_name"] == "durable"
        assert broker["result_backend"].count("@redis-durable-sentinel-") == 3
        # Over TLS, to the Sentinels and to the master, with the mounted CA.
        ca = tls_files["REDIS_TLS_CA_FILE"]
        for options in ("broker_transport_options", "result_backend_transport_options"):
            assert broker[options]["sentinel_kwargs"]["ssl_ca_certs"] == ca
        assert broker["broker_use_ssl"]["ssl_ca_certs"] == ca
        assert broker["redis_backend_use_ssl"]["ssl_ca_certs"] == ca


def test_redis_sentinel_and_their_clients_speak_tls(config: Any, deploy_tls: TlsFiles) -> None:
    """Servers and Sentinels get their certificates but never the CA's key; the health checks
    and redis-commander connect with TLS and the deployment's CA."""
    services = config["services"]
    tls_dir = str(deploy_tls.ca_cert.parent)
    for name in REDIS_SERVICES:
        service = services[name]
        seen = mounts(service)
        assert {seen[f"/etc/redis/tls/{f}"] for f in ("ca.crt", "server.key", "client.key")} <= {
            f"{tls_dir}/{f}" for f in ("ca.crt", "server.key", "client.key")
        }, name
        assert str(deploy_tls.ca_key) not in seen.values(), name
        assert "cp /etc/redis/tls/* /data/tls/" in " ".join(service["command"]), name
        assert "--tls --cacert /data/tls/ca.crt" in " ".join(service["healthcheck"]["test"])
    for name in APP_SERVICES:
        assert str(deploy_tls.ca_key) not in mounts(services[name]).values(), name
        assert services[name]["environment"]["REDIS_TLS"] == "true", name
    commander = services["redis-commander"]
    assert commander["environment"]["REDIS_TLS"] == "true"
    ca_path = commander["environment"]["NODE_EXTRA_CA_CERTS"]
    assert mounts(commander)[ca_path] == str(deploy_tls.ca_cert)


def test_the_rabbitmq_profile_takes_the_broker_url_from_the_env_file(
    tmp_path: Path, secrets_env: dict[str, str], deploy_tls: TlsFiles
) -> None:
    amqp = f"amqp://membership:{secrets_env['RABBITMQ_PASSWORD']}@rabbitmq:5672/membership"
    env_file = tmp_path / ".env.production"
    values = {
        **secrets_env,
        "COMPOSE_PROFILES": "rabbitmq",
        "CELERY_BROKER_URL": amqp,
        "DEPLOY_TLS_DIR": str(deploy_tls.ca_cert.parent),
    }
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    result = run_config(env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_VHOST"] == "membership"
    for name in APP_SERVICES:
        environment = dict(services[name]["environment"])
        mounted = mounts(services[name])  # the certificate files as the host has them
        for key, value in environment.items():
            if key.removeprefix("DURABLE_").startswith("REDIS_TLS_"):
                environment[key] = mounted[value]
        settings = load_settings(**{k.lower(): v for k, v in environment.items()}, _env_file=None)
        conf = celeryconfig.from_settings(settings)
        assert conf["broker_url"] == amqp, name
        assert conf["broker_transport_options"] == {"confirm_publish": True}
        # Results stay on the durable Redis role.
        assert conf["result_backend"].count("@redis-durable-sentinel-") == 3


def test_a_missing_secret_stops_compose(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    env_file = tmp_path / ".env.production"
    kept = {k: v for k, v in secrets_env.items() if k != "REDIS_APP_PASSWORD"}
    env_file.write_text("".join(f"{name}={value}\n" for name, value in kept.items()))
    result = run_config(env_file)
    assert result.returncode != 0
    assert "REDIS_APP_PASSWORD" in result.stderr
    assert "deploy-redis-production.sh" in result.stderr


def test_the_compose_file_holds_no_secret() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRET_NAMES:
        # Every secret is a variable, never a literal value.
        assert f"{name}=" not in text, name
