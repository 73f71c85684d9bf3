"""The local stack of ``cachectl up``: API, worker, beat and Flower as supervised children.

Each child runs in its own session (process group) with its output in ``<workdir>/logs``, so
a Ctrl-C in the terminal reaches cachectl alone, which then stops the children in order:
the API first (no new work), Flower, beat (no new ticks), the worker last (a warm shutdown
finishes or hands back what it is running). A child that lingers past the timeout has its
whole group killed, pool processes included, so nothing outlives ``cachectl up``.

Readiness is checked, not assumed: the worker answers ``celery inspect ping``, the beat holds
the leader lease, the API answers HTTP, Flower answers its health check. The probes use the
services cachectl opened for the run (services.Services: its task client, its durable Redis
role), never a connection of their own. A probe that fails (Redis or the broker away for a
moment) or does not answer within PROBE_TIMEOUT means "not yet", as once started: only the
deadline or a child's exit stops ``up``;
:func:`retrying` gives the steps before the children (database, cache round trip) the same.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import httpx
from redis.exceptions import RedisError

from cachectl import localtoken
from config import Settings
from services import Services
from workers import flower, routing
from workers.client import TaskClient

STOP_TIMEOUT: Final = 20.0
READY_TIMEOUT: Final = 90.0
RETRY_MAX_DELAY: Final = 2.0  # between attempts of a start-up step: a blip is seconds
PROBE_TIMEOUT: Final = 5.0  # a readiness probe still unanswered by then counts as failing

T = TypeVar("T")
Notice = Callable[[str], None]


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Supervisor:
    workdir: Path
    env: Mapping[str, str]
    children: list[Child] = field(default_factory=list)
    cwd: Path | None = None  # None: cachectl's own (its .env is the children's too)

    def start(self, name: str, argv: list[str]) -> Child:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child = Child(name, argv, logs / f"{name}.log")
        with child.log.open("ab") as out:
            child.proc = subprocess.Popen(
                argv,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [child for child in self.children if not child.alive]

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM each child in reverse start order and wait; SIGKILL the group of any
        that lingers (and of every child, for pool processes left behind)."""
        for child in reversed(self.children):
            if child.alive and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout)
        for child in self.children:
            if child.proc is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def has_api() -> bool:
    """The API is started only where its package can be run (``python -m api_stub``)."""
    return _found("api_stub.__main__")


def worker_queues() -> tuple[list[str], list[str]]:
    """(queues, extra task modules): cache.writebehind is consumed only by a worker that has
    its task (tasks/writebehind.py, not yet in workers.factory.TASK_MODULES); a worker
    without it would take those messages and drop them as unregistered."""
    if _found("tasks.writebehind"):
        return list(routing.QUEUES), ["tasks.writebehind"]
    return [queue for queue in routing.QUEUES if queue != routing.Q_WRITEBEHIND], []


def worker_name() -> str:
    return f"cachectl-{os.getpid()}@{os.uname().nodename}"


def commands(settings: Settings, workdir: Path, concurrency: int) -> dict[str, list[str]]:
    python = sys.executable
    queues, modules = worker_queues()
    nice = ["nice", "-n", str(settings.worker_nice)] if settings.worker_nice else []
    found = {
        "worker": [
            *nice,
            python,
            *("-m", "celery", "-A", "workers.app", "worker", "-l", "INFO"),
            *("-c", str(concurrency), "-n", worker_name(), "-Q", ",".join(queues)),
            *(arg for module in modules for arg in ("-I", module)),
        ],
        "beat": [
            python,
            *("-m", "celery", "-A", "workers.app", "beat", "-l", "INFO"),
            *("-s", str(workdir / "celerybeat-schedule")),
        ],
        "flower": [python, "-m", "workers.flower", "--db", str(workdir / "flower.db")],
    }
    if has_api():
        found["api"] = [
            python,
            *("-m", "api_stub", "--host", settings.api_host, "--port", str(settings.api_port)),
        ]
    return found


def child_env(
    settings: Settings, database_url: str, flower_password: str, management_tokens: str
) -> dict[str, str]:
    """What every child must agree on: the Redis actually in use (an embedded one included),
    the database resolved once, Flower's password and the management tokens (the local
    stack's minted one when none is configured)."""
    return {
        "REDIS_HOST": settings.redis_host,
        "REDIS_PORT": str(settings.redis_port),
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": database_url,
        "FLOWER_PASSWORD": flower_password,
        "MANAGEMENT_TOKENS": management_tokens,
        "PYTHONUNBUFFERED": "1",
    }


def retrying(
    attempt: Callable[[], T],
    what: str,
    errors: tuple[type[BaseException], ...],
    notice: Notice,
    timeout: float = READY_TIMEOUT,
) -> T:
    """``attempt()``, again after each of ``errors`` (backing off to RETRY_MAX_DELAY) until
    ``timeout``; then the last error. The first failure is reported through ``notice``."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    noticed = False
    while True:
        try:
            return attempt()
        except errors as exc:
            if time.monotonic() + delay > deadline:
                raise
            if not noticed:
                notice(f"{what} not ready yet ({_reason(exc)}); retrying for {timeout:.0f} s")
                noticed = True
        time.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY)


def _reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:200]


# --- readiness ------------------------------------------------------------------------------
def worker_ready(client: TaskClient) -> bool:
    """Our worker answers ``celery inspect ping`` (another one on the broker does not count)."""
    name = worker_name()
    replies = client.app.control.ping([name], timeout=0.5) or []
    return any(name in reply for reply in replies)


def beat_ready(services: Services) -> bool:
    """A beat holds the leader lease (ours, unless another beat already leads: fine too)."""
    try:
        return bool(services.redis("durable").exists(services.keys.system("beat", "leader")))
    except RedisError:
        return False


def http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


def checks(services: Services, started: Mapping[str, Child]) -> dict[str, Callable[[], bool]]:
    """The readiness probe of each child, over ``services`` (opened with ``tasks=True``)."""
    settings = services.settings
    found: dict[str, Callable[[], bool]] = {
        "worker": lambda: worker_ready(services.tasks),
        "beat": lambda: beat_ready(services),
        "flower": lambda: http_ready(f"http://127.0.0.1:{settings.flower_port}/healthcheck"),
    }
    if "api" in started:
        found["api"] = lambda: http_ready(api_url(settings) + "/openapi.json")
    return found


class _ProbeRun:
    """One readiness probe running in a daemon thread of its own. A probe can block without
    bound: kombu's publish behind ``celery inspect ping`` reconnects forever when the broker
    dies mid-call. Run apart, it cannot stall the wait for the others or the deadline, and a
    thread still stuck when ``up`` exits does not hold the exit."""

    def __init__(self, probe: Callable[[], bool]) -> None:
        self.started = time.monotonic()
        self.outcome: bool | Exception | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(probe,), name="ready-probe", daemon=True).start()

    def _run(self, probe: Callable[[], bool]) -> None:
        try:
            self.outcome = probe()
        except Exception as exc:  # any failure of a yes/no question is a "not yet"
            self.outcome = exc
        finally:
            self.done.set()


def wait_ready(
    supervisor: Supervisor,
    probes: Mapping[str, Callable[[], bool]],
    timeout: float = READY_TIMEOUT,
    stopping: Callable[[], bool] = lambda: False,
    notice: Notice = lambda _: None,
    probe_timeout: float = PROBE_TIMEOUT,
) -> list[str]:
    """Names still not ready at the deadline ([] when all are), each with the last error of
    its probe; raises RuntimeError when a child exits while starting. A probe that raises
    (Redis or the broker away for a moment), or has not answered within ``probe_timeout``, is
    not ready yet; its first failure is reported through ``notice``. A probe is not asked
    again while its last run is still under way."""
    pending = dict(probes)
    running: dict[str, _ProbeRun] = {}
    failed: dict[str, str] = {}  # the last error of a probe still failing
    noticed: set[str] = set()
    deadline = time.monotonic() + timeout

    def fails(name: str, reason: str) -> None:
        failed[name] = reason
        if name not in noticed:
            notice(f"{name} not ready yet ({reason}); still waiting")
            noticed.add(name)

    while pending and time.monotonic() < deadline and not stopping():
        for child in supervisor.dead():
            raise RuntimeError(f"{child.name} exited while starting:\n{child.tail()}")
        for name in pending.keys() - running.keys():
            running[name] = _ProbeRun(pending[name])
        time.sleep(0.25)
        for name, run in list(running.items()):
            if not run.done.is_set():
                if time.monotonic() - run.started > probe_timeout:
                    fails(name, f"no answer in {probe_timeout:.0f} s")
                continue
            del running[name]
            if isinstance(run.outcome, Exception):
                fails(name, _reason(run.outcome))
                continue
            failed.pop(name, None)
            if run.outcome:
                del pending[name]
    return [f"{name} ({failed[name]})" if name in failed else name for name in sorted(pending)]


def api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def flower_credentials(settings: Settings) -> tuple[str, str, bool]:
    return flower.credentials(settings)


def management_tokens(settings: Settings, workdir: Path) -> tuple[str, str | None, bool]:
    """(MANAGEMENT_TOKENS for the children, the local admin token or None, minted): the
    configured tokens; without any, the local stack's own (cachectl/localtoken.py)."""
    configured = settings.management_tokens.get_secret_value()
    if configured:
        return configured, None, False
    token, minted = localtoken.load_or_mint(workdir)
    return localtoken.configured(token), token, minted
