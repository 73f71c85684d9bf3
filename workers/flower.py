"""Flower for the platform: ``python -m workers.flower`` (``cachectl flower`` runs the same).

Starts ``celery -A workers.app flower`` on Settings.flower_port with:

- basic authentication from FLOWER_USER / FLOWER_PASSWORD (and FLOWER_PREVIOUS_PASSWORD
  during a rotation: both are accepted); an empty password is generated
  at start-up and printed once (the credentials travel in Flower's environment, never on its
  command line, where ``ps`` would show them);
- persistent state (``--persistent --db=var/flower.db``): task history survives a restart;
- task names, arguments and results as columns of the task list.

Caveat (upstream Flower 2.x): ``/metrics`` (Prometheus) and ``/healthcheck`` are served
without authentication whatever the auth options. Bind Flower to loopback or a private
network (the default address here is 127.0.0.1), or put a proxy in front that guards those
two paths; the task list, the API and the worker controls do require the credentials.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from config import Settings, load_settings_or_exit

DB_PATH: Final = Path("var") / "flower.db"
TASK_COLUMNS: Final = "name,uuid,state,args,kwargs,result,received,started,runtime,worker"
MAX_TASKS: Final = 50_000  # kept in memory (and in the state file): a day of busy history


def credentials(settings: Settings) -> tuple[str, str, bool]:
    """(user, password, generated): the configured password, else a fresh random one."""
    password = settings.flower_password.get_secret_value()  # its form checked by Settings
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)  # URL-safe: never a ',' that would cut it
    return settings.flower_user, password, generated


def command(port: int, address: str, db_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "flower",
        f"--port={port}",
        f"--address={address}",
        "--persistent=True",
        f"--db={db_path}",
        f"--tasks_columns={TASK_COLUMNS}",
        f"--max_tasks={MAX_TASKS}",
    ]


def environment(user: str, password: str, previous: str = "") -> dict[str, str]:
    """Flower's options read from its environment (FLOWER_<OPTION>). Flower accepts a list
    of logins: during a rotation the previous password is the second one."""
    logins = [f"{user}:{password}"] + ([f"{user}:{previous}"] if previous else [])
    return {"FLOWER_BASIC_AUTH": ",".join(logins)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.flower", description=__doc__)
    parser.add_argument("--port", type=int, help="default: FLOWER_PORT (5555)")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--db", type=Path, default=DB_PATH, help="persistent state file")
    args = parser.parse_args(argv)
    settings = load_settings_or_exit()
    user, password, generated = credentials(settings)
    if generated:
        print(f"Flower login: {user} / {password} (generated; set FLOWER_PASSWORD to keep one)")
    args.db.parent.mkdir(parents=True, exist_ok=True)
    argv_ = command(args.port or settings.flower_port, args.address, args.db)
    sys.stdout.flush()
    # exec: Flower becomes this process, so a supervisor's signals reach it directly.
    previous = settings.flower_previous_password.get_secret_value()
    env = {**os.environ, **environment(user, password, previous)}
    os.execve(argv_[0], argv_, env)  # noqa: S606
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
