"""The web UIs' passwords, rotated in the deploy's env file (.env.production, mode 600).

Flower accepts a list of logins, so its rotation has two phases around the clients' move::

    cachectl rotate flower --env-file .env.production
        FLOWER_PREVIOUS_PASSWORD=<old>, FLOWER_PASSWORD=<new>; restart Flower: both work
    (clients, scripts and bookmarks move to the new password)
    cachectl rotate flower --finish --env-file .env.production
        FLOWER_PREVIOUS_PASSWORD removed; restart Flower: only the new one works

redis-commander takes one HTTP login (HTTP_USER/HTTP_PASSWORD), so its rotation is one step:
REDIS_COMMANDER_PASSWORD=<new>, then recreate the container; open browser sessions are asked
for the new password. The file is rewritten atomically, every other line kept as it was.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cachectl.rotate import RotationError
from deploy.render import _ENV_LINE, _write_private, read_env_file

# The variables' names (not secrets).
FLOWER_PASSWORD: Final = "FLOWER_PASSWORD"  # noqa: S105
FLOWER_PREVIOUS: Final = "FLOWER_PREVIOUS_PASSWORD"
COMMANDER_PASSWORD: Final = "REDIS_COMMANDER_PASSWORD"  # noqa: S105


def generated() -> str:
    """A new password: 192 random bits, URL-safe (no ',' or ':' for Flower's login list)."""
    return secrets.token_urlsafe(24)


def update_env_file(path: Path, changes: Mapping[str, str | None]) -> None:
    """Set (or, with None, remove) variables of the env file; other lines are kept."""
    if any(value is not None and ("\n" in value or "," in value) for value in changes.values()):
        raise RotationError("a password may contain neither a newline nor ','")
    kept: list[str] = []
    done: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ENV_LINE.match(line.strip())
        name = str(match["name"]) if match else ""
        if name in changes:
            done.add(name)
            value = changes[name]
            if value is not None:
                kept.append(f"{name}={value}")
            continue
        kept.append(line)
    kept += [f"{n}={v}" for n, v in changes.items() if n not in done and v is not None]
    _write_private(path, "\n".join(kept) + "\n")


def start_flower(path: Path, new: str) -> None:
    """Phase 1: the new password, and the old one still accepted."""
    values = read_env_file(path)
    old = values.get(FLOWER_PASSWORD, "")
    if not old:
        raise RotationError(f"{path} has no {FLOWER_PASSWORD}")
    if values.get(FLOWER_PREVIOUS):
        raise RotationError(f"a rotation is under way ({FLOWER_PREVIOUS} is set): --finish it")
    if new == old:
        raise RotationError("the new password is the old one")
    update_env_file(path, {FLOWER_PASSWORD: new, FLOWER_PREVIOUS: old})


def finish_flower(path: Path) -> None:
    """Phase 2: the old password is accepted no more."""
    if not read_env_file(path).get(FLOWER_PREVIOUS):
        raise RotationError(f"no rotation under way: {path} has no {FLOWER_PREVIOUS}")
    update_env_file(path, {FLOWER_PREVIOUS: None})


def rotate_commander(path: Path, new: str) -> None:
    if read_env_file(path).get(COMMANDER_PASSWORD) == new:
        raise RotationError("the new password is the old one")
    update_env_file(path, {COMMANDER_PASSWORD: new})
