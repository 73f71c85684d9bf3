"""The quarterly audit: Redis version and security configuration, as a list of findings.

Checks (each finding has a severity: high, medium, low or info):

- version: older than MIN_VERSION is high, older than CURRENT_LINE low;
- authentication: no requirepass with a password-less default user (high); any enabled ACL
  user with ``nopass`` (high); users allowed every command on every key (medium);
- exposure: protected-mode off, or listening on every interface (medium, high without auth);
- dangerous commands the cache's own user may run (ACL DRYRUN): FLUSHALL, FLUSHDB, KEYS,
  DEBUG, SHUTDOWN, CONFIG SET, MODULE LOAD (medium each);
- TLS: off on a non-loopback bind (medium), or on beside an open plaintext port (low).

CONFIG and ACL may be refused to the cache's user, as they should be in production: those
checks then report "unknown" (info) and say that an admin connection is needed for them.
Any high or medium finding puts the report in the alert state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from cache.errors import CacheUnavailable
from tasks.jobs.base import JobContext, Report, judged

MIN_VERSION: Final = (6, 2)  # ACLs with selectors, ACL DRYRUN's predecessor checks
CURRENT_LINE: Final = (7, 2)
DANGEROUS: Final = (
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN",),
    ("CONFIG", "SET", "maxmemory", "0"),
    ("MODULE", "LOAD", "/dev/null"),
)
LOOPBACK: Final = {"127.0.0.1", "::1", "-::1", "localhost"}
ALERTING: Final = {"high", "medium"}

Finding = dict[str, str]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def _finding(check: str, severity: str, detail: str) -> Finding:
    return {"check": check, "severity": severity, "detail": detail}


def check_version(version: str) -> list[Finding]:
    parsed = version_tuple(version)
    if parsed < MIN_VERSION:
        return [_finding("version", "high", f"Redis {version} is older than 6.2: unsupported")]
    if parsed < CURRENT_LINE:
        return [_finding("version", "low", f"Redis {version} predates the 7.2 line: plan it")]
    return [_finding("version", "info", f"Redis {version}")]


def parse_acl(lines: list[str]) -> dict[str, list[str]]:
    """``ACL LIST`` lines (``user <name> <rules...>``) by user name."""
    users: dict[str, list[str]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "user":
            users[parts[1]] = parts[2:]
    return users


def check_users(users: dict[str, list[str]], requirepass: str | None) -> list[Finding]:
    found: list[Finding] = []
    for name, rules in sorted(users.items()):
        if "on" not in rules:
            continue
        if "nopass" in rules:
            severity = "high"
            detail = f"ACL user {name!r} is enabled with nopass"
            if name == "default" and requirepass:
                continue  # requirepass sets the default user's password
            found.append(_finding("auth", severity, detail))
        if ("+@all" in rules or "allcommands" in rules) and ("~*" in rules or "allkeys" in rules):
            found.append(
                _finding("acl", "medium", f"ACL user {name!r} may run every command on every key")
            )
    return found


def check_exposure(config: dict[str, str], authenticated: bool) -> list[Finding]:
    found: list[Finding] = []
    binds = set(config.get("bind", "").split())
    public = not binds or not binds <= LOOPBACK
    if config.get("protected-mode") == "no":
        found.append(_finding("exposure", "medium", "protected-mode is off"))
    if public:
        severity = "medium" if authenticated else "high"
        found.append(
            _finding("exposure", severity, f"listens beyond loopback (bind {sorted(binds)})")
        )
    tls_port = int(config.get("tls-port", "0") or 0)
    port = int(config.get("port", "0") or 0)
    if not tls_port and public:
        found.append(_finding("tls", "medium", "TLS is off on a non-loopback listener"))
    elif not tls_port:
        found.append(_finding("tls", "info", "TLS is off (loopback only)"))
    elif port:
        found.append(_finding("tls", "low", f"TLS on {tls_port} but plaintext open on {port}"))
    else:
        found.append(_finding("tls", "info", f"TLS only, on port {tls_port}"))
    return found


def check_commands(dryrun: Callable[[tuple[str, ...]], bool], user: str) -> list[Finding]:
    return [
        _finding("commands", "medium", f"user {user!r} may run {' '.join(command[:2])}")
        for command in DANGEROUS
        if dryrun(command)
    ]


def audit(client: Any) -> list[Finding]:
    try:
        found = check_version(_text(client.info("server").get("redis_version", "0")))
    except ResponseError as exc:
        found = [_finding("version", "info", f"INFO refused ({exc}): version not audited")]
    try:
        config = {
            _text(name): _text(value)
            for pattern in ("requirepass", "protected-mode", "bind", "port", "tls-port")
            for name, value in client.config_get(pattern).items()
        }
    except ResponseError as exc:
        config = {}
        found.append(_finding("config", "info", f"CONFIG refused ({exc}): checked by ACL only"))
    try:
        user = _text(client.acl_whoami())
        users = parse_acl([_text(line) for line in client.acl_list()])
    except ResponseError as exc:
        user, users = "unknown", {}
        found.append(_finding("acl", "info", f"ACL refused ({exc}): users not audited"))
    requirepass = config.get("requirepass") or None
    found += check_users(users, requirepass)
    if config:
        default = users.get("default", [])
        authenticated = bool(requirepass) or ("on" in default and "nopass" not in default)
        found += check_exposure(config, authenticated)

    def allowed(command: tuple[str, ...]) -> bool:
        try:
            return _text(client.acl_dryrun(user, *command)) == "OK"
        except ResponseError:
            return False  # unknown user, renamed or missing command: not runnable as such

    if users:
        found += check_commands(allowed, user)
    return found


def run(ctx: JobContext) -> Report:
    try:
        found = audit(ctx.cache.clients.writer)
    except RedisError as exc:
        raise CacheUnavailable(f"audit: {exc}") from exc
    alerts = [f["detail"] for f in found if f["severity"] in ALERTING]
    counts = {s: sum(f["severity"] == s for f in found) for s in ("high", "medium", "low", "info")}
    return judged({"findings": found, "counts": counts}, alerts)
