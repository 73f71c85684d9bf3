"""cachectl: the operator's command line.

Exit codes: 0 ok, 1 unhealthy or failed, 2 usage or configuration error.

A command that needs the cache, the database or the task client opens this process's
services once (services.Services) and closes them when it ends; ``config`` and the commands
of cachectl/remote.py (which go through the management API) open none.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console
from rich.table import Table

from cache import DataType
from cache.kinds import WARMUPS
from cachectl import backup, localtoken, remote, rotations, tokens
from cachectl.embedded import EmbeddedRedis, answers, start_embedded_redis
from config import Settings, load_settings_or_exit, mask_url
from services import Services

# Warm-ups by name (cache.kinds.WARMUPS); "members" takes ids: the management API's.
WARMUPS_BY_NAME: Final = tuple(name for name in WARMUPS if name != "members")

app = typer.Typer(help="Operate the membership cache.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _settings(**overrides: object) -> Settings:
    return load_settings_or_exit(**overrides)


@app.command("config")
def show_config(as_json: JsonOption = False) -> None:
    """Show the effective configuration, secrets masked."""
    shown = _settings().masked()
    if as_json:
        print(json.dumps(shown, default=str))
        return
    table = Table("setting", "value", title="effective configuration")
    for name, value in shown.items():
        table.add_row(name.upper(), str(value))
    console.print(table)


@contextlib.contextmanager
def _redis_for(settings: Settings, workdir: Path) -> Iterator[Settings]:
    """The configured Redis when it answers; otherwise an embedded one for this run."""
    if settings.redis_mode != "standalone" or answers(settings.redis_host, settings.redis_port):
        yield settings
        return
    console.print(
        f"no Redis at {settings.redis_host}:{settings.redis_port}; starting an embedded one"
    )
    embedded: EmbeddedRedis = start_embedded_redis(workdir)
    try:
        yield _settings(redis_host="127.0.0.1", redis_port=embedded.port, redis_url=None)
    finally:
        embedded.stop()


def _round_trip(settings: Settings) -> float:
    """Write, read back and delete one value; seconds taken. Raises when the cache is unusable."""
    with Services.open(settings) as services:
        cache = services.cache
        key = cache.keys.system("selfcheck", str(time.time_ns()))
        started = time.perf_counter()
        if not cache.set(key, {"ok": True}, DataType.DEFAULT, ttl=30):
            raise RuntimeError("could not write to Redis")
        if cache.get(key) != {"ok": True}:
            raise RuntimeError("value read back differs from the value written")
        cache.delete(key)
        return time.perf_counter() - started


@app.command()
def check(as_json: JsonOption = False) -> None:
    """Check the configuration and make one cache round trip."""
    settings = _settings()
    try:
        seconds = _round_trip(settings)
    except Exception as exc:
        err.print(f"[red]cache round trip failed:[/red] {exc}")
        raise typer.Exit(1) from None
    result = {"redis_mode": settings.redis_mode, "round_trip_ms": round(seconds * 1000, 3)}
    print(json.dumps(result)) if as_json else console.print(f"cache ok: {result}")


def _prepare_database(settings: Settings, members: int) -> str:
    """Migrate the database and seed it when it has no members yet; returns its URL.
    A database that does not answer yet is retried until a deadline (cachectl.stack)."""
    from sqlalchemy.exc import OperationalError

    from cachectl.stack import retrying
    from db.errors import DatabaseUnavailable

    return retrying(
        lambda: _migrate_and_seed(settings, members),
        "the database",
        (OperationalError, DatabaseUnavailable, OSError),
        _notice,
    )


def _notice(message: str) -> None:
    err.print(f"[yellow]{message}[/yellow]")


def _migrate_and_seed(settings: Settings, members: int) -> str:
    # Imported here so that `cachectl config` works without touching the data layer.
    from db.engine import session_factory
    from db.migrate import upgrade
    from db.queries import count_members
    from db.seed import seed as seed_members

    with Services.open(settings) as services:
        url = services.database_url
        upgrade(url)
        with session_factory(services.engine)() as session:
            existing = count_members(session)
        if existing == 0 and members > 0:
            report = seed_members(services.engine, members, progress=True)
            console.print(f"seeded {report.members:,} members in {report.seconds:.1f} s")
    return url


@app.command()
def seed(
    members: Annotated[int, typer.Option("--members", min=0, help="How many members.")] = 10_000,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
) -> None:
    """Generate realistic demo data (replaces existing members), migrating first."""
    from db.migrate import upgrade
    from db.seed import seed as seed_members

    with Services.open(_settings()) as services:
        upgrade(services.database_url)
        report = seed_members(services.engine, members, progress=True, seed=seed_value)
    console.print(
        f"seeded {report.members:,} members and {report.payments:,} payments "
        f"into {report.dialect} in {report.seconds:.1f} s"
    )


@app.command()
def up(
    workdir: Annotated[
        Path, typer.Option(help="Runtime files (embedded Redis, SQLite, the local token).")
    ] = localtoken.WORKDIR,
    once: Annotated[bool, typer.Option(help="Check and exit instead of serving.")] = False,
    members: Annotated[int, typer.Option(help="Demo members seeded into an empty DB.")] = 2_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
) -> None:
    """Run the platform locally: Redis (embedded if none), database, then API, worker, beat
    and Flower until Ctrl-C."""
    settings = _settings()
    database = _prepare_database(settings, members)
    console.print(f"database ready: {mask_url(database)}")
    with _redis_for(settings, workdir) as effective:
        from cachectl.stack import retrying

        try:
            # A Redis that blips while starting is waited for, as once started.
            seconds = retrying(lambda: _round_trip(effective), "Redis", (Exception,), _notice)
        except Exception as exc:
            err.print(f"[red]cache round trip failed:[/red] {exc}")
            raise typer.Exit(1) from None
        where = f"{effective.redis_host}:{effective.redis_port}"
        console.print(f"[green]ready[/green]: Redis {where}, round trip {seconds * 1000:.2f} ms")
        if once:
            return
        serve(effective, database, workdir, concurrency)


def serve(settings: Settings, database: str, workdir: Path, concurrency: int) -> None:
    """Start the children, wait until each is ready, print where they are, run until
    SIGINT/SIGTERM, then stop them all."""
    from cachectl import stack

    user, password, generated = stack.flower_credentials(settings)
    tokens, token, minted = stack.management_tokens(settings, workdir)
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    supervisor = stack.Supervisor(workdir, stack.child_env(settings, database, password, tokens))
    services = Services.open(settings, tasks=True)
    code = 0
    try:
        started = {
            name: supervisor.start(name, argv)
            for name, argv in stack.commands(settings, workdir, concurrency).items()
        }
        console.print(f"started {', '.join(started)}; logs in {workdir / 'logs'}")
        late = stack.wait_ready(
            supervisor, stack.checks(services, started), stopping=stopping.is_set, notice=_notice
        )
        if late and not stopping.is_set():
            raise RuntimeError(f"not ready in time: {', '.join(late)}")
        if not stopping.is_set():
            login = Login(user, password, generated, token, minted, localtoken.path(workdir))
            _print_urls(settings, started, login)
            _autowarm(services, settings)
        while not stopping.wait(0.5):
            if supervisor.dead():
                dead = supervisor.dead()[0]
                raise RuntimeError(f"{dead.name} exited:\n{dead.tail()}")
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/red]")
        code = 1
    finally:
        console.print("stopping ...")
        supervisor.stop_all()
        services.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("stopped")
    if code:
        raise typer.Exit(code)


def _autowarm(services: Services, settings: Settings) -> None:
    """The last step of ``up``: the automatic warm-up (tasks/autowarm.py), sent, not awaited;
    its progress shows in Flower and on the dashboard. A broker that refuses it is reported,
    the stack keeps running (the worker's start-up check and beat's watch warm too)."""
    if not settings.cache_autowarm:
        return
    try:
        task_id = services.tasks.enqueue_auto_warm("cachectl-up")
    except Exception as exc:
        err.print(f"[yellow]automatic warm-up not sent[/yellow]: {exc}")
        return
    console.print(f"automatic warm-up sent: {task_id}")


@dataclass(frozen=True)
class Login:
    """What ``up`` prints to log in: Flower's credentials and the local management token."""

    user: str
    password: str
    generated: bool
    token: str | None  # the local stack's admin token; None when MANAGEMENT_TOKENS is set
    minted: bool  # minted by this run: printed once; later runs say where it is kept
    token_file: Path


def _print_urls(settings: Settings, started: Mapping[str, object], login: Login) -> None:
    from cachectl import stack

    table = Table("process", "where", title="membership-cache is up", show_lines=False)
    if "api" in started:
        table.add_row("api", f"{stack.api_url(settings)}/docs")
    flower = f"{login.user} / {login.password}" + (" (generated)" if login.generated else "")
    table.add_row("flower", f"http://127.0.0.1:{settings.flower_port}  login {flower}")
    if login.token is not None and "api" in started:
        where = f"kept in {login.token_file}"
        shown = f"{login.token}  (admin; {where})" if login.minted else f"admin, {where}"
        table.add_row("api token", shown)
    table.add_row("worker", stack.worker_name())
    table.add_row("beat", "leader lease held")
    table.add_row("redis", f"{settings.redis_host}:{settings.redis_port}")
    console.print(table)
    console.print("[green]ready[/green]: press Ctrl-C to stop")


@app.command()
def warmup(
    kind: Annotated[
        str,
        typer.Argument(
            help=f"one of {', '.join(WARMUPS_BY_NAME)}, or auto (critical, one at a time)"
        ),
    ] = "critical",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the end.")] = 3600.0,
    reason: Annotated[str, typer.Option(help="Why (auto only): deploy, manual ...")] = "manual",
) -> None:
    """Enqueue a warm-up and show its progress until it is done."""
    from cachectl.progress import follow

    if kind not in (*WARMUPS_BY_NAME, "auto"):
        choices = ", ".join((*WARMUPS_BY_NAME, "auto"))
        err.print(f"[red]unknown warm-up {kind!r}[/red]: one of {choices}")
        raise typer.Exit(2)
    with Services.open(_settings(), tasks=True) as services:
        try:
            task_id = (
                services.tasks.enqueue_auto_warm(reason)
                if kind == "auto"
                else services.tasks.enqueue_warmup(kind)
            )
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        console.print(f"warm-up {kind} enqueued: {task_id}")
        final = follow(services.tasks, task_id, timeout=timeout, console=console)
    if final is None:
        err.print(f"[red]not done after {timeout:.0f} s[/red] (is a worker running?)")
        raise typer.Exit(1)
    if final.state != "SUCCESS":
        err.print(f"[red]warm-up {final.state}[/red]: {final.error}")
        raise typer.Exit(1)
    result = final.result if isinstance(final.result, dict) else {}
    if result.get("skipped") == "running":
        by = result.get("by") or {}
        console.print(f"skipped: warm-up {by.get('task_id')} ({by.get('reason')}) is running")
        return
    console.print(
        f"[green]done[/green]: {result.get('written', 0):,} keys written, "
        f"{result.get('present', 0):,} already cached, in {result.get('seconds', 0)} s"
    )


@app.command("flower")
def run_flower(
    port: Annotated[int | None, typer.Option(help="Default: FLOWER_PORT.")] = None,
) -> None:
    """Run Flower with basic auth and persistent state (see workers/flower.py)."""
    from workers.flower import main as flower_main

    raise typer.Exit(flower_main([] if port is None else ["--port", str(port)]))


# health, metrics, clear, invalidate, reports, dead-letters (through the management API),
# hash-token and rotate-password: see cachectl/remote.py.
remote.register(app)
backup.register(app)  # backup, restore: see cachectl/backup.py
app.add_typer(tokens.app, name="tokens")  # add, revoke, list: see cachectl/tokens.py
app.add_typer(rotations.app, name="rotate")  # every other secret: see cachectl/rotations.py


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    app()
