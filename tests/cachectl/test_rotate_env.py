"""cachectl rotate flower / redis-commander: the env file's passwords change, and the real UI
restarted from it takes the client through the rotation with no failed request.

Flower (python -m workers.flower, as `cachectl up` runs it) accepts both passwords between the
phases. redis-commander (from npm, the version of docker-compose.yml, with the environment
compose gives the service) has one login: it is recreated, and the client logs in to the new
process with the new password. A restart refuses connections for a moment; the client retries
those, as any HTTP client of a restarting service does, and only an answer other than 200
counts as a failure."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cachectl.main import app as cachectl
from cachectl.rotate_env import COMMANDER_PASSWORD
from deploy.render import read_env_file
from tests.deploy.conftest import generate_secrets
from tests.deploy.test_compose import run_config
from tests.support.process_group import stop_group
from tests.support.redis_commander import RedisCommanderMissing, install
from tests.support.redis_procs import RedisProcess, free_port, start_redis, wait_for
from tests.support.traffic import Traffic
from tests.workers.processes import REPO

pytestmark = pytest.mark.slow

USER = "operator"
REQUEST_DEADLINE_S = 60.0  # a request waits this long for a restarting UI


class WebUi:
    """A web UI the test runs on one port (restarted on it), answering /healthcheck, its
    output in ``<directory>/<name>.log``, stopped with its process group."""

    name = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        with (self.directory / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self.answers, 60, message=lambda: f"{self.name} to answer: {self.log()}")

    def log(self) -> str:
        return (self.directory / f"{self.name}.log").read_text(errors="replace")[-2000:]

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 20)
            self.proc = None


class Flower(WebUi):
    """``python -m workers.flower`` with the env file's variables, restarted on one port."""

    name = "flower"

    def __init__(self, env_file: Path, broker: RedisProcess, directory: Path) -> None:
        super().__init__(directory)
        self.env_file, self.broker = env_file, broker

    def start(self) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        env = (
            inherited
            | read_env_file(self.env_file)
            | {
                "FLOWER_PORT": str(self.port),
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(self.broker.port),
                "CELERY_BROKER_URL": f"{self.broker.url}/1",
                "CELERY_RESULT_BACKEND": f"{self.broker.url}/2",
                "PYTHONPATH": str(REPO),
            }
        )
        self.launch([sys.executable, "-m", "workers.flower"], env, cwd=self.directory)

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self, password: str) -> int:
        return httpx.get(f"{self.url}/api/tasks", auth=(USER, password), timeout=10).status_code


class Commander(WebUi):
    """redis-commander with the environment compose gives the service from the env file (its
    Redis connection aside: a private redis-server), restarted on one port as
    `docker compose up -d redis-commander` recreates it."""

    # The image's entrypoint turns these into the Redis connection; the rest node reads itself.
    CONNECTION = ("REDIS_", "SENTINEL", "NODE_EXTRA_CA_CERTS")

    name = "redis-commander"

    def __init__(self, entry: Path, env_file: Path, redis: RedisProcess, directory: Path) -> None:
        super().__init__(directory)
        self.entry, self.env_file, self.redis = entry, env_file, redis
        self.user = ""

    def service_environment(self) -> dict[str, str]:
        config = run_config(self.env_file)
        assert config.returncode == 0, config.stderr
        env = yaml.safe_load(config.stdout)["services"]["redis-commander"]["environment"]
        return {k: str(v) for k, v in env.items() if not k.startswith(self.CONNECTION)}

    def start(self) -> None:
        service = self.service_environment()
        self.user = service["HTTP_USER"]
        env = service | {
            "PATH": os.environ["PATH"],
            "HOME": str(self.directory),
            "ADDRESS": "127.0.0.1",
            "PORT": str(self.port),
            "NOSAVE": "true",  # no connection list written into the package's config
        }
        redis = ["--redis-host", "127.0.0.1", "--redis-port", str(self.redis.port)]
        self.launch(["node", str(self.entry), *redis], env)

    def status(self, password: str) -> int:
        """Sign in as the UI does, then read the server's INFO with the session's token; a
        refused login is a 401. The token is signed with a key of the process: a restarted
        UI asks for the password again."""
        with httpx.Client(base_url=self.url, timeout=10) as http:
            login = http.post("/signin", data={"username": self.user, "password": password})
            if login.status_code != 200 or not login.json()["ok"]:
                return 401
            session = {"Authorization": f"Bearer {login.json()['bearerToken']}"}
            return http.get("/apiv2/server/info", headers=session).status_code


class Client(Traffic[str]):
    """Authenticated API calls with the password of the client's secret store, counted by
    password."""

    def __init__(self, status: Callable[[str], int], password: str) -> None:
        super().__init__(self.call)
        self.status = status
        self.password = password
        self.retried = 0

    def call(self, _: int) -> str:
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        while True:
            password = self.password  # each attempt with the store's password of the moment
            try:
                status = self.status(password)
            except httpx.TransportError:  # restarting: not listening yet
                if time.monotonic() > deadline:
                    raise
                self.retried += 1
                time.sleep(0.05)
                continue
            if status != 200:
                raise AssertionError(f"answered {status}")
            return password


@pytest.fixture
def flower(tmp_path: Path) -> Iterator[Flower]:
    env_file = tmp_path / ".env.production"
    env_file.write_text(
        f"# secrets of the deploy\nFLOWER_USER={USER}\nFLOWER_PASSWORD=old-Flower-1\nKEPT=yes\n"
    )
    with start_redis() as broker:
        running = Flower(env_file, broker, tmp_path)
        try:
            running.start()
            yield running
        finally:
            running.stop()


@pytest.fixture
def commander(tmp_path: Path) -> Iterator[Commander]:
    try:
        entry = install()
    except RedisCommanderMissing as exc:
        pytest.fail(str(exc))
    env_file = tmp_path / ".env.production"
    secrets = generate_secrets() | {COMMANDER_PASSWORD: "old-Commander-1"}
    env_file.write_text("".join(f"{name}={value}\n" for name, value in secrets.items()))
    env_file.chmod(0o600)
    with start_redis() as redis:
        running = Commander(entry, env_file, redis, tmp_path)
        try:
            running.start()
            yield running
        finally:
            running.stop()


def _rotate(*args: str, **env: str) -> None:
    result = CliRunner().invoke(cachectl, ["rotate", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_flower_password_rotates_with_no_refused_request(flower: Flower) -> None:
    old, new = "old-Flower-1", "new-Flower-2"
    with Client(flower.status, old) as client:
        client.served(old, 10)
        _rotate("flower", "--env-file", str(flower.env_file), FLOWER_NEW_PASSWORD=new)
        values = read_env_file(flower.env_file)
        assert values["FLOWER_PASSWORD"] == new and values["FLOWER_PREVIOUS_PASSWORD"] == old
        assert values["KEPT"] == "yes" and "# secrets of the deploy" in flower.env_file.read_text()
        assert stat.S_IMODE(flower.env_file.stat().st_mode) == 0o600
        flower.restart()
        assert (flower.status(old), flower.status(new)) == (200, 200)
        client.served(old, 10)  # the client has not moved yet
        client.password = new
        client.served(new, 10)
        _rotate("flower", "--finish", "--env-file", str(flower.env_file))
        assert "FLOWER_PREVIOUS_PASSWORD" not in read_env_file(flower.env_file)
        flower.restart()
        client.served(new, 10)
    assert client.failures == []
    assert (flower.status(old), flower.status(new)) == (401, 200)
    # No password on any command line (Flower's included): they travel in the environment.
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    assert not [c for c in cmdlines if new.encode() in c]


def test_redis_commander_password_rotates_with_no_failed_request(commander: Commander) -> None:
    old, new = "old-Commander-1", "new-Commander-2"
    with Client(commander.status, old) as client:
        client.served(old, 10)
        _rotate(
            "redis-commander",
            "--env-file",
            str(commander.env_file),
            REDIS_COMMANDER_NEW_PASSWORD=new,
        )
        assert read_env_file(commander.env_file)[COMMANDER_PASSWORD] == new
        client.served(old, 5)  # the running UI keeps its login until it is recreated
        commander.stop()
        retried = client.retried
        client.password = new  # the recreated UI asks for the new one
        commander.start()
        client.served(new, 10)
    assert client.failures == []
    assert client.retried > retried  # the traffic went on through the restart
    assert (commander.status(old), commander.status(new)) == (401, 200)
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    assert not [c for c in cmdlines if new.encode() in c]


def test_redis_commander_password_and_bad_rotations(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.production"
    env_file.write_text("REDIS_COMMANDER_PASSWORD=one\nFLOWER_PASSWORD=f\n")
    _rotate("redis-commander", "--env-file", str(env_file))
    generated = read_env_file(env_file)["REDIS_COMMANDER_PASSWORD"]
    assert generated != "one" and len(generated) >= 32
    runner = CliRunner()
    finish_first = runner.invoke(
        cachectl, ["rotate", "flower", "--finish", "--env-file", str(env_file)]
    )
    assert finish_first.exit_code == 1 and "no rotation under way" in finish_first.output
    comma = runner.invoke(
        cachectl,
        ["rotate", "flower", "--env-file", str(env_file)],
        env={"FLOWER_NEW_PASSWORD": "a,b"},
    )
    assert comma.exit_code == 1
    assert read_env_file(env_file) == {
        "REDIS_COMMANDER_PASSWORD": generated,
        "FLOWER_PASSWORD": "f",
    }
