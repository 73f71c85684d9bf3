"""cachectl: the operator's command line.

Exit codes: 0 ok, 1 unhealthy or failed, 2 usage or configuration error.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cache import DataType, build_cache
from cachectl.embedded import EmbeddedRedis, answers, start_embedded_redis
from config import ConfigError, Settings, load_settings, mask_url

app = typer.Typer(help="Operate the membership cache.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one plain line, never wrapped
        raise typer.Exit(2) from None


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
    cache = build_cache(settings)
    try:
        key = cache.keys.system("selfcheck", str(time.time_ns()))
        started = time.perf_counter()
        if not cache.set(key, {"ok": True}, DataType.DEFAULT, ttl=30):
            raise RuntimeError("could not write to Redis")
        if cache.get(key) != {"ok": True}:
            raise RuntimeError("value read back differs from the value written")
        cache.delete(key)
        return time.perf_counter() - started
    finally:
        cache.close()


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
    """Migrate the database and seed it when it has no members yet; returns its URL."""
    # Imported here so that `cachectl config` works without touching the data layer.
    from db.engine import make_engine, resolve_database_url, session_factory
    from db.migrate import upgrade
    from db.queries import count_members
    from db.seed import seed as seed_members

    url = resolve_database_url(settings)
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            existing = count_members(session)
        if existing == 0 and members > 0:
            report = seed_members(engine, members, progress=True)
            console.print(f"seeded {report.members:,} members in {report.seconds:.1f} s")
    finally:
        engine.dispose()
    return url


@app.command()
def seed(
    members: Annotated[int, typer.Option("--members", min=0, help="How many members.")] = 10_000,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
) -> None:
    """Generate realistic demo data (replaces existing members), migrating first."""
    from db.engine import make_engine, resolve_database_url
    from db.migrate import upgrade
    from db.seed import seed as seed_members

    settings = _settings()
    url = resolve_database_url(settings)
    upgrade(url)
    engine = make_engine(url)
    try:
        report = seed_members(engine, members, progress=True, seed=seed_value)
    finally:
        engine.dispose()
    console.print(
        f"seeded {report.members:,} members and {report.payments:,} payments "
        f"into {report.dialect} in {report.seconds:.1f} s"
    )


@app.command()
def up(
    workdir: Annotated[Path, typer.Option(help="Runtime files (embedded Redis, SQLite).")] = Path(
        "var"
    ),
    once: Annotated[bool, typer.Option(help="Check and exit instead of serving.")] = False,
    members: Annotated[int, typer.Option(help="Demo members seeded into an empty DB.")] = 2_000,
) -> None:
    """Run the platform locally: configuration, Redis (embedded if none), database, cache."""
    settings = _settings()
    database = _prepare_database(settings, members)
    console.print(f"database ready: {mask_url(database)}")
    with _redis_for(settings, workdir) as effective:
        try:
            seconds = _round_trip(effective)
        except Exception as exc:
            err.print(f"[red]cache round trip failed:[/red] {exc}")
            raise typer.Exit(1) from None
        where = f"{effective.redis_host}:{effective.redis_port}"
        console.print(f"[green]ready[/green]: Redis {where}, round trip {seconds * 1000:.2f} ms")
        if once:
            return
        console.print("press Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    app()
