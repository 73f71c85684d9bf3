"""``cachectl rotate <secret>``: every secret of the platform changed without downtime.

Passwords come from the environment, never the command line (where ``ps`` shows them)::

    rotate sentinel USER SENTINEL_URL...       SENTINEL_ADMIN_PASSWORD, SENTINEL_OLD_PASSWORD,
                                               SENTINEL_NEW_PASSWORD   (cachectl/rotate_sentinel.py)
    rotate sentinel-auth USER NODE_URL... --sentinel URL...
                                               REDIS_ADMIN_PASSWORD, SENTINEL_ADMIN_PASSWORD,
                                               REDIS_OLD_PASSWORD, REDIS_NEW_PASSWORD
    rotate postgres                            DATABASE_URL (the app's), POSTGRES_ADMIN_URL,
                                               POSTGRES_NEW_PASSWORD   (cachectl/rotate_postgres.py)
    rotate flower [--finish] --env-file F      FLOWER_NEW_PASSWORD, else generated
    rotate redis-commander --env-file F        REDIS_COMMANDER_NEW_PASSWORD, else generated

``rotate redis`` is ``cachectl rotate-password`` (the Redis ACL users, cachectl/rotate.py)
under this group; the management tokens are ``cachectl tokens`` (cachectl/tokens.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from cachectl import remote
from cachectl.rotate import DEFAULT_GRACE_S, RotationError, node_from_url
from deploy.render import RenderError

app = typer.Typer(help="Rotate a secret without downtime.", no_args_is_help=True)
console = Console()

GraceOption = Annotated[
    float, typer.Option(min=0, help="Seconds the clients have to move to the new password.")
]
EnvFileOption = Annotated[
    Path, typer.Option("--env-file", exists=True, dir_okay=False, help="The deploy's env file.")
]


def _fail(message: str) -> NoReturn:
    print(f"error: rotation failed: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _secret(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        print(f"error: {name} is not set", file=sys.stderr)
        raise typer.Exit(2)
    return value


app.command("redis")(remote.rotate_password)


@app.command("sentinel")
def sentinel(
    user: Annotated[str, typer.Argument(help="The Sentinels' ACL user of the clients.")],
    sentinels: Annotated[list[str], typer.Argument(help="redis[s]://host:port of each.")],
    admin_user: Annotated[str, typer.Option(help="The Sentinels' ACL admin.")] = "admin",
    grace_s: GraceOption = DEFAULT_GRACE_S,
) -> None:
    """The password clients and peers log in to the Sentinels with (two-phase ACL)."""
    from cachectl.rotate_sentinel import rotate_sentinel_password

    admin = _secret("SENTINEL_ADMIN_PASSWORD")
    old, new = _secret("SENTINEL_OLD_PASSWORD"), _secret("SENTINEL_NEW_PASSWORD")
    nodes = [node_from_url(url, admin_user, admin, sentinel=True) for url in sentinels]
    try:
        rotate_sentinel_password(nodes, user, old, new, grace_s=grace_s)
    except RotationError as exc:
        _fail(str(exc))
    finally:
        for node in nodes:
            node.admin.close()
    console.print(f"[green]rotated[/green] {user} on {len(nodes)} Sentinel(s)")


@app.command("sentinel-auth")
def sentinel_auth(
    user: Annotated[str, typer.Argument(help="The Redis ACL user the Sentinels log in as.")],
    nodes: Annotated[list[str], typer.Argument(help="redis[s]://host:port of master, replicas.")],
    sentinels: Annotated[list[str], typer.Option("--sentinel", help="A Sentinel (repeat).")],
    master: Annotated[str, typer.Option(help="The monitored master's name.")] = "mymaster",
    admin_user: Annotated[str, typer.Option(help="ACL admin of Redis and Sentinels.")] = "admin",
) -> None:
    """The password the Sentinels log in to Redis with (sentinel auth-pass)."""
    from cachectl.rotate_sentinel import rotate_auth_pass

    redis_admin, sentinel_admin = (
        _secret("REDIS_ADMIN_PASSWORD"),
        _secret("SENTINEL_ADMIN_PASSWORD"),
    )
    old, new = _secret("REDIS_OLD_PASSWORD"), _secret("REDIS_NEW_PASSWORD")
    built = [node_from_url(url, admin_user, redis_admin) for url in nodes]
    watchers = [node_from_url(url, admin_user, sentinel_admin, sentinel=True) for url in sentinels]
    try:
        rotate_auth_pass(built, watchers, master, user, old, new)
    except RotationError as exc:
        _fail(str(exc))
    finally:
        for node in (*built, *watchers):
            node.admin.close()
    console.print(f"[green]rotated[/green] {user}; {len(watchers)} Sentinel(s) use the new one")


@app.command("postgres")
def postgres(grace_s: GraceOption = DEFAULT_GRACE_S) -> None:
    """The app's PostgreSQL password: moved to the twin role, then the old one retired."""
    from cachectl.rotate_postgres import rotate_postgres_password

    app_url, admin_url = _secret("DATABASE_URL"), _secret("POSTGRES_ADMIN_URL")
    try:
        moved = rotate_postgres_password(
            admin_url, app_url, _secret("POSTGRES_NEW_PASSWORD"), grace_s=grace_s
        )
    except RotationError as exc:
        _fail(str(exc))
    console.print(f"[green]rotated[/green]: the app logs in as {make_url(moved).username} now")


@app.command("flower")
def flower(
    env_file: EnvFileOption,
    finish: Annotated[bool, typer.Option(help="Phase 2: drop the old password.")] = False,
) -> None:
    """Flower's basic-auth password: both accepted, clients move, then --finish."""
    from cachectl.rotate_env import finish_flower, generated, start_flower

    try:
        if finish:
            finish_flower(env_file)
        else:
            start_flower(env_file, os.environ.get("FLOWER_NEW_PASSWORD") or generated())
    except (RotationError, RenderError) as exc:
        _fail(str(exc))
    step = "only the new password works" if finish else "both passwords work"
    console.print(f"{env_file} updated; restart Flower, then {step}")
    if not finish:
        console.print("move the clients to FLOWER_PASSWORD, then run this with --finish")


@app.command("redis-commander")
def redis_commander(env_file: EnvFileOption) -> None:
    """redis-commander's HTTP password (one login: recreate the container)."""
    from cachectl.rotate_env import generated, rotate_commander

    try:
        rotate_commander(env_file, os.environ.get("REDIS_COMMANDER_NEW_PASSWORD") or generated())
    except (RotationError, RenderError) as exc:
        _fail(str(exc))
    console.print(f"{env_file} updated; recreate redis-commander (docker compose up -d)")
