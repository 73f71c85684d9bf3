"""Render the Redis, Sentinel and ACL templates of deploy/redis/ with values from the environment.

``${NAME}`` is replaced by the value of NAME (missing or empty is an error), ``${NAME:-text}``
falls back to ``text``, and ``${NAME|sha256}`` is the SHA-256 hex digest of the value, so the ACL
file stores ``#<digest>`` and never a clear password. ``$`` anywhere else is left alone.

Values must be single tokens: whitespace, quotes, backslashes or control characters in a value
could end a directive and start another one in redis.conf, so they are refused. Comment lines
are dropped from ``*.acl`` output, because Redis rejects comments in an ACL file.

Usage (stdlib only, so the deploy script needs nothing but python3)::

    python3 deploy/render.py --env-file .env.production --out var/deploy
    python3 deploy/render.py --env-file .env.production --out var/deploy --roles

``--roles`` renders the templates once per Redis role (:data:`ROLES`) into ``OUT/<role>``:
what differs between the cache role's servers and the durable role's. Without it the
templates' defaults describe one server holding both roles.

Non-empty values from the environment win over the env file, as in docker compose.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

TEMPLATE_DIR: Final = Path(__file__).resolve().parent / "redis"
SUFFIX: Final = ".template"
# The rendered files hold passwords (masterauth, auth-pass, requirepass): owner only.
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

# The Redis roles of a production deployment (docs/architecture.md), each a master, a replica
# and three Sentinels of its own: the values of the templates that differ between them. The
# cache role evicts (LFU among keys with a TTL, all of its keys have one) and never stops a
# write for want of a replica; the durable role never evicts and accepts a write only while
# its replica follows. Its Sentinels watch the master under DURABLE_REDIS_SENTINEL_MASTER.
ROLES: Final[dict[str, dict[str, str]]] = {
    "cache": {"REDIS_MAXMEMORY_POLICY": "volatile-lfu", "REDIS_MIN_REPLICAS_TO_WRITE": "0"},
    "durable": {
        "REDIS_MAXMEMORY_POLICY": "noeviction",
        "REDIS_MIN_REPLICAS_TO_WRITE": "1",
        "REDIS_MASTER_HOST": "redis-durable-master",
        "REDIS_SENTINEL_MASTER": "${DURABLE_REDIS_SENTINEL_MASTER:-durable}",
    },
}

_PLACEHOLDER: Final = re.compile(
    r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?::-(?P<default>[^}]*)|\|(?P<filter>sha256))?\}"
)
_UNSAFE: Final = re.compile(r"[\s\"'\\\x00-\x1f\x7f]")
_ENV_LINE: Final = re.compile(r"^(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


class RenderError(Exception):
    """A template cannot be rendered: a value is missing or unsafe, or a placeholder is bad."""


def placeholders(template: str) -> set[str]:
    """Names a template reads, with or without a default."""
    return {match["name"] for match in _PLACEHOLDER.finditer(template)}


def required(template: str) -> set[str]:
    """Names a template reads without a default: the ones the environment must provide."""
    return {m["name"] for m in _PLACEHOLDER.finditer(template) if m["default"] is None}


def render_text(template: str, env: Mapping[str, str], *, source: str = "template") -> str:
    """The template with every placeholder replaced; RenderError lists all problems at once."""
    missing: set[str] = set()
    unsafe: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        value = env.get(name, "")
        if not value:
            if default is None:
                missing.add(name)
                return ""
            value = default
        if _UNSAFE.search(value):
            unsafe.add(name)
            return ""
        if match["filter"] == "sha256":
            return hashlib.sha256(value.encode()).hexdigest()
        return value

    text = _PLACEHOLDER.sub(substitute, template)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(sorted(missing))}")
    if unsafe:
        problems.append(f"whitespace, quote or control character in {', '.join(sorted(unsafe))}")
    leftover = sorted({line.strip() for line in text.splitlines() if "${" in line})
    if leftover:
        problems.append(f"malformed placeholder in {leftover[0]!r}")
    if problems:
        raise RenderError(f"{source}: {'; '.join(problems)}")
    return text


def strip_comments(text: str) -> str:
    """Drop blank and ``#`` comment lines (ACL files accept neither comments nor indentation)."""
    kept = (line.strip() for line in text.splitlines())
    return "".join(f"{line}\n" for line in kept if line and not line.startswith("#"))


def output_name(template: Path) -> str:
    return template.name.removesuffix(SUFFIX)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` with mode 600, atomically: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_dir(
    out_dir: Path,
    env: Mapping[str, str],
    *,
    template_dir: Path = TEMPLATE_DIR,
) -> list[Path]:
    """Render every ``*.template`` of ``template_dir`` into ``out_dir``; the written paths.

    Nothing is written unless every template renders.
    """
    templates = sorted(template_dir.glob(f"*{SUFFIX}"))
    if not templates:
        raise RenderError(f"no *{SUFFIX} files in {template_dir}")
    rendered: dict[str, str] = {}
    errors: list[str] = []
    for template in templates:
        name = output_name(template)
        try:
            text = render_text(template.read_text(encoding="utf-8"), env, source=template.name)
        except RenderError as exc:
            errors.append(str(exc))
            continue
        rendered[name] = strip_comments(text) if name.endswith(".acl") else text
    if errors:
        raise RenderError("\n".join(errors))
    out_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(out_dir, DIR_MODE)
    written = []
    for name, text in rendered.items():
        path = out_dir / name
        _write_private(path, text)
        written.append(path)
    return written


def role_env(role: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the role's values (which may themselves name a variable, with a default)."""
    values = {
        name: render_text(value, env, source=f"role {role}") for name, value in ROLES[role].items()
    }
    return {**env, **values}


def render_roles(out_dir: Path, env: Mapping[str, str]) -> list[Path]:
    """Every template once per role, into ``out_dir/<role>``; the written paths."""
    written: list[Path] = []
    for role in ROLES:
        written += render_dir(out_dir / role, role_env(role, env))
    return written


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``export`` optional, one level of matching quotes removed)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise RenderError(f"{path}:{number}: expected NAME=value")
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match["name"]] = value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--env-file", type=Path, help="KEY=VALUE file; the environment wins")
    parser.add_argument("--out", type=Path, required=True, help="directory for rendered files")
    parser.add_argument("--templates", type=Path, default=TEMPLATE_DIR)
    parser.add_argument(
        "--roles", action="store_true", help="render each Redis role into OUT/<role>"
    )
    args = parser.parse_args(argv)
    env: dict[str, str] = {}
    try:
        if args.env_file is not None:
            env.update(read_env_file(args.env_file))
        env.update({name: value for name, value in os.environ.items() if value})
        if args.roles:
            written = render_roles(args.out, env)
        else:
            written = render_dir(args.out, env, template_dir=args.templates)
    except (RenderError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"rendered {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
