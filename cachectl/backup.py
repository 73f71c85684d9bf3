"""cachectl backup / restore: an RDB copy made on demand, and a check that a copy loads.

``backup`` runs the daily job's own function (tasks/jobs/backup.py) against the configured
Redis, so it has the same needs: BGSAVE, LASTSAVE and CONFIG for its user, and the Redis data
directory readable from here. Copies go to ``var/backups/manual`` by default: a directory of
their own, so that neither retention (the newest 7 by name) deletes the other's copies.

``restore`` never touches the configured Redis' data: it starts a private redis-server on
127.0.0.1 with the copy as its dump.rdb, counts its keys and compares a random sample of them
(DUMP payloads) with the source. ``restore --into URL`` restores the copy into a live node
(cachectl/recovery.py). Both check a copy against its manifest first (tasks/jobs/manifest.py).
Exit codes: 0 ok, 1 failed or differing, 2 usage or refused (nothing written).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

import redis
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from cachectl import recovery
from config import ConfigError, Settings, load_settings
from services import Services
from tasks.jobs import manifest as manifests
from tasks.jobs.backup import RDB_MAGIC, BackupError, backed_up_node
from tasks.jobs.backup import backup as run_backup
from tasks.jobs.loaded_copy import LoadError, load_copy

CLI_SOCKET_TIMEOUT_S: Final = 10.0  # the cache's 0.25 s suits requests, not BGSAVE or DUMP
SCAN_COUNT: Final = 1000
SHOWN_KEYS: Final = 10  # changed keys named in the output

console = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(code: int, message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)  # one plain line, never wrapped
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        configured = load_settings()
        timeout = max(configured.redis_socket_timeout, CLI_SOCKET_TIMEOUT_S)
        return load_settings(redis_socket_timeout=timeout, redis_connect_timeout=timeout)
    except ConfigError as exc:
        _fail(2, str(exc))


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


# --- backup -------------------------------------------------------------------------------------
def backup(
    dest: Annotated[
        Path | None,
        typer.Option("--dest", help="Directory for the copy [default: BACKUP_DIR/manual]."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """BGSAVE the configured Redis and copy its dump.rdb (the daily backup job, run now)."""
    settings = _settings()
    if settings.redis_mode == "cluster":
        _fail(2, "a cluster is backed up node by node; point cachectl at one node instead")
    services = Services.open(settings)
    client = backed_up_node(services)
    # Seconds in the name: several manual copies a day, sorting after that day's daily one.
    label = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    try:
        target = Path(settings.backup_dir) / "manual" if dest is None else dest
        second = None if settings.copy_dir is None else settings.copy_dir / "manual"
        done = run_backup(
            client, target, label, dump_files=settings.dump_files, keys=services.cache.keys,
            copy_dir=second,
        )  # fmt: skip
    except (BackupError, RedisError, OSError) as exc:
        _fail(1, f"backup failed: {exc}")
    finally:
        services.close()
    done["db"] = settings.redis_db
    if as_json:
        print(json.dumps(done))
        return
    table = Table("name", "value", title="backup")
    table.add_row("file", done["copy"])
    table.add_row("manifest", done["manifest"])
    if "second_copy" in done:
        table.add_row("second copy", done["second_copy"]["copy"])
    table.add_row("keys (every database)", f"{done['keys']:,}")
    table.add_row("size", f"{done['bytes']:,} bytes")
    table.add_row("seconds", str(done["seconds"]))
    if done["pruned"]:
        table.add_row("pruned", ", ".join(done["pruned"]))
    console.print(table)


# --- restore ------------------------------------------------------------------------------------
def sample_keys(client: redis.Redis, size: int, seed: int | None = None) -> list[bytes]:
    """A uniform random sample of up to ``size`` keys, by reservoir over a whole SCAN.

    SCAN, never KEYS; a full pass is fine on this private server, which nothing else uses.
    """
    rng = random.Random(seed)
    chosen: list[bytes] = []
    for seen, key in enumerate(client.scan_iter(count=SCAN_COUNT)):
        if seen < size:
            chosen.append(key)
        elif (slot := rng.randrange(seen + 1)) < size:
            chosen[slot] = key
    return chosen


def _value(client: Any, key: bytes) -> tuple[str, Any]:
    """The value as plain data, for payloads that differ only in encoding or element order."""
    kind = _text(client.type(key))
    if kind == "string":
        return kind, client.get(key)
    if kind == "hash":
        return kind, client.hgetall(key)
    if kind == "list":
        return kind, client.lrange(key, 0, -1)
    if kind == "set":
        return kind, client.smembers(key)
    if kind == "zset":
        return kind, client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return kind, client.xrange(key)
    return kind, None  # unknown type: the DUMP payloads alone decide


@dataclass
class Comparison:
    matched: int = 0
    changed: list[bytes] = field(default_factory=list)
    missing: int = 0


def compare(restored: redis.Redis, source: Any, keys: list[bytes]) -> Comparison:
    """Each key's value on ``restored`` against ``source``; a key gone from the source is missing.

    Equal DUMP payloads are equal values. Unequal ones are compared as data before calling the
    key changed: the payload also carries the encoding (a hash loaded from RDB may turn listpack)
    and the server's RDB version, which differ without the value differing.
    """
    result = Comparison()
    for key in keys:
        theirs = source.dump(key)
        if theirs is None:
            result.missing += 1
            continue
        ours = restored.dump(key)
        if ours == theirs:
            result.matched += 1
            continue
        mine, other = _value(restored, key), _value(source, key)
        if mine == other and mine[1] is not None:
            result.matched += 1
        else:
            result.changed.append(key)
    return result


def restore(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="An RDB copy.")
    ],
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Default: a free port.")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify-against-source/--no-verify",
            help="Compare sampled keys with the configured Redis.",
        ),
    ] = True,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Keys to compare.")] = 100,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the restored server running.")
    ] = False,
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            metavar="URL",
            help="Restore into this live, empty Redis node (redis:// or rediss://) and verify "
            "it against the copy's manifest.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --into: write over a node that is not empty.")
    ] = False,
    no_manifest: Annotated[
        bool,
        typer.Option(
            "--no-manifest", help="Restore a copy that has no manifest (no checksum to check)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check a copy in a private redis-server (key count, sampled values), or with --into
    restore it into a live node. Exit codes: 0 ok, 1 failed or differing, 2 usage or refused
    (nothing written: a corrupt copy, a node that is not empty)."""
    with file.open("rb") as fh:
        if fh.read(len(RDB_MAGIC)) != RDB_MAGIC:
            _fail(2, f"{file} is not an RDB file")
    manifest = _checked_manifest(file, required=into is not None and not no_manifest)
    settings = _settings()
    if into is not None:
        _restore_into(file, into, force, manifest, settings.redis_key_prefix, as_json)
        return
    result: dict[str, Any] = {"file": str(file.resolve()), "db": settings.redis_db}
    try:
        server, client = load_copy(file, port)
    except (RuntimeError, OSError) as exc:
        _fail(1, f"restore failed: {exc}")
    comparison: Comparison | None = None
    try:
        # The copy holds every database; the one compared is the configured one.
        client.select(settings.redis_db)
        result["port"] = server.port
        result["keys"] = int(client.dbsize())
        if verify:
            with Services.open(settings) as services:
                source = services.redis("durable")
                keys = sample_keys(client, sample)
                comparison = compare(client, source, keys)
                result["source_keys"] = int(source.dbsize())
    except BaseException as exc:
        client.close()
        server.stop()  # kept running only after a completed check
        if isinstance(exc, RedisError):
            _fail(1, f"verification failed: {exc}")
        raise
    client.close()
    if not keep_running:
        server.stop()
    ok = result["keys"] > 0
    if comparison is not None:
        ok = ok and not comparison.changed
        result |= {
            "sampled": comparison.matched + len(comparison.changed) + comparison.missing,
            "matched": comparison.matched,
            "changed": len(comparison.changed),
            "missing": comparison.missing,
            "changed_keys": [_text(key) for key in comparison.changed[:SHOWN_KEYS]],
        }
    result["ok"] = ok
    result["running"] = keep_running
    if keep_running:
        result |= {"pid": server.process.pid, "dir": str(server.dir)}
    _print_restore(result, as_json)
    if not ok:
        raise typer.Exit(1)


def _checked_manifest(file: Path, *, required: bool) -> dict[str, Any] | None:
    """The copy's manifest once the copy matches it; exit 2 when it does not, or when one is
    required and missing. A copy from before manifests is checked by loading alone."""
    if not required and not manifests.manifest_path(file).exists():
        return None
    try:
        return manifests.read_verified(file)
    except manifests.ManifestError as exc:
        hint = " (a copy without one: --no-manifest)" if "no manifest" in str(exc) else ""
        _fail(2, f"refused: {exc}{hint}")
    except OSError as exc:
        _fail(2, f"refused: {file} cannot be read: {exc}")


def _restore_into(
    file: Path,
    url: str,
    force: bool,
    manifest: dict[str, Any] | None,
    prefix: str,
    as_json: bool,
) -> None:
    try:
        result = recovery.restore_into(file, url, force=force, manifest=manifest, prefix=prefix)
    except recovery.RestoreRefused as exc:
        _fail(2, f"refused: {exc}")
    except recovery.RestoreFailed as exc:
        _fail(1, f"{exc}; the node may hold part of the copy: run again with --force")
    except (LoadError, OSError) as exc:
        _fail(1, f"restore failed: {exc}")
    if as_json:
        print(json.dumps(result))
    else:
        title = f"restore into {result['into']}: {'ok' if result['ok'] else 'DIFFERS'}"
        table = Table("database", "restored", "expired in the copy", title=title)
        for db, moved in result["databases"].items():
            table.add_row(db, f"{moved['restored']:,}", f"{moved['expired']:,}")
        console.print(table)
        console.print(
            f"expired since the backup (keys with a TTL): {result['expired_since_backup']:,}"
        )
        for db, streams in result["streams"].items():
            for name, stream in streams.items():
                groups = ", ".join(
                    f"{group} pending {g['pending']} at {g['last_delivered_id']}"
                    for group, g in stream["groups"].items()
                )
                console.print(
                    f"db {db} stream {name}: {stream['length']:,} entries, last {stream['last_id']}"
                    + (f"; {groups}" if groups else "")
                )
        for db, queues in result["queues"].items():
            for name, length in queues.items():
                console.print(f"db {db} queue {name}: {length:,} messages")
        for difference in result["differences"]:
            err.print(f"differs: {difference}")
    if not result["ok"]:
        raise typer.Exit(1)


def _print_restore(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    table = Table("name", "value", title=f"restore: {'ok' if result['ok'] else 'FAILED'}")
    for name in ("file", "keys", "source_keys", "sampled", "matched", "changed", "missing"):
        if name in result:
            value = result[name]
            table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    if result.get("changed_keys"):
        table.add_row("changed keys", ", ".join(result["changed_keys"]))
    console.print(table)
    if result["running"]:
        console.print(
            f"restored server left running on 127.0.0.1:{result['port']} (pid {result['pid']}, "
            f"dir {result['dir']}); stop it with: redis-cli -p {result['port']} shutdown nosave"
        )


def register(app: typer.Typer) -> None:
    """Add the commands to cachectl's app."""
    app.command()(backup)
    app.command()(restore)


__all__ = ["compare", "register", "sample_keys"]
