"""redis-commander from the npm registry, the version docker-compose.yml's image runs.

Installed into var/node/ (ignored by git) on first use, and by scripts/test.sh before the
suite; a second call finds it there and runs no npm::

    python -m tests.support.redis_commander      # install if missing, print the entry point
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "var" / "node"
# No install scripts: the native bcrypt is optional (bcryptjs stands in).
NPM_FLAGS = ("--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--ignore-scripts")
PACKAGE_DIR = NODE_DIR / "node_modules" / "redis-commander"
_IMAGE = re.compile(r"image:\s*ghcr\.io/joeferner/redis-commander:(?P<version>[\w.-]+)")


class RedisCommanderMissing(RuntimeError):
    """npm is absent or could not install redis-commander."""


def compose_version() -> str:
    """The image tag of the redis-commander service: the version the deploy runs."""
    match = _IMAGE.search((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    if match is None:
        raise RedisCommanderMissing("docker-compose.yml names no redis-commander image")
    return match["version"]


def _installed_version() -> str | None:
    try:
        manifest = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def install() -> Path:
    """The entry point (bin/redis-commander.js), installed with npm when missing or outdated."""
    version = compose_version()
    entry = PACKAGE_DIR / "bin" / "redis-commander.js"
    if _installed_version() == version:
        return entry
    npm = shutil.which("npm")
    if npm is None:
        raise RedisCommanderMissing(
            "npm is not installed (apt-get install npm, or run scripts/test.sh)"
        )
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    # Parallel test workers: one installs, the others wait for it and find it done.
    with (NODE_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version() != version:
            result = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(NODE_DIR),
                    *NPM_FLAGS,
                    f"redis-commander@{version}",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            if result.returncode != 0 or _installed_version() != version:
                raise RedisCommanderMissing(
                    f"npm install redis-commander@{version} failed:\n{result.stderr[-2000:]}"
                )
    return entry


if __name__ == "__main__":
    print(install())
