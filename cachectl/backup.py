"""cachectl backup / restore: an RDB copy made on demand, and a check that a copy loads.

``backup`` runs the daily job's own function (tasks/jobs/backup.py) against the configured
Redis, so it has the same needs: BGSAVE, LASTSAVE and CONFIG for its user, and the Redis data
directory readable from here. Copies go to ``var/backups/manual`` by default: a directory of
their own, so that neither retention (the newest 7 by name) deletes the other's copies.

``restore`` never touches the configured Redis' data: it starts a private redis-server on
127.0.0.1 with the copy as its dump.rdb, counts its keys and compares a random sample of them
(DUMP payloads) with the source. Exit codes: 0 ok, 1 failed or differing, 2 usage.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

import redis
import typer
from redis.exceptions import BusyLoadingError, RedisError
from rich.console import Console
from rich.table import Table

from config import ConfigError, Settings, load_settings
from services import Services
from tasks.jobs.backup import RDB_MAGIC, BackupError
from tasks.jobs.backup import backup as run_backup

CLI_SOCKET_TIMEOUT_S: Final = 10.0  # the cache's 0.25 s suits requests, not BGSAVE or DUMP
LOAD_TIMEOUT_S: Final = 120.0  # a large RDB takes a while to load
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
    client = services.redis("durable")
    # Seconds in the name: several manual copies a day, sorting after that day's daily one.
    label = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    try:
        target = Path(settings.backup_dir) / "manual" if dest is None else dest
        done = run_backup(client, target, label, dump_files=settings.dump_files)
        # Right after the save: equal to the copy's count unless writers are busy meanwhile.
        done["keys"] = int(client.dbsize())
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
    table.add_row(f"keys (db {settings.redis_db})", f"{done['keys']:,}")
    table.add_row("size", f"{done['bytes']:,} bytes")
    table.add_row("seconds", str(done["seconds"]))
    if done["pruned"]:
        table.add_row("pruned", ", ".join(done["pruned"]))
    console.print(table)


# --- restore ------------------------------------------------------------------------------------
@dataclass
class Restored:
    """A private redis-server loaded from a copy."""

    process: subprocess.Popen[bytes]
    port: int
    dir: Path

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        # `save ""` in its config: SIGTERM does not write the data back over the copy.
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_loaded(server: Restored, client: redis.Redis) -> None:
    """Until the server answers with ``loading:0``; raises with its log when it exits."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {server.log_tail()}")
        with contextlib.suppress(BusyLoadingError, redis.ConnectionError):
            if str(client.info("persistence").get("loading")) == "0":
                return
        time.sleep(0.05)
    raise RuntimeError(f"the copy did not load within {LOAD_TIMEOUT_S:.0f} s")


def start_restored(copy: Path, port: int | None) -> tuple[Restored, redis.Redis]:
    """Start redis-server on a copy of ``copy``; the server and a client to it, loaded."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server on PATH")
    attempts = 3 if port is None else 1  # a free port can be taken before the server binds it
    for attempt in range(attempts):
        chosen = _free_port() if port is None else port
        directory = Path(tempfile.mkdtemp(prefix=f"cachectl-restore-{chosen}-"))
        shutil.copyfile(copy, directory / "dump.rdb")
        conf = directory / "redis.conf"
        conf.write_text(
            f'bind 127.0.0.1\nport {chosen}\ndir "{directory}"\ndbfilename dump.rdb\n'
            f'save ""\nappendonly no\ndaemonize no\nlogfile "{directory / "redis.log"}"\n'
        )
        # Own session: a Ctrl-C of cachectl does not reach a server kept running.
        process = subprocess.Popen(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = Restored(process, chosen, directory)
        client = redis.Redis(host="127.0.0.1", port=chosen, socket_timeout=CLI_SOCKET_TIMEOUT_S)
        try:
            _wait_loaded(server, client)
        except BaseException as exc:
            client.close()
            tail = server.log_tail()
            server.stop()
            if "Address already in use" in tail and attempt + 1 < attempts:
                continue
            raise exc
        return server, client
    raise AssertionError("unreachable")


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
    as_json: JsonOption = False,
) -> None:
    """Load a copy into a private redis-server and check it: key count and sampled values."""
    with file.open("rb") as fh:
        if fh.read(len(RDB_MAGIC)) != RDB_MAGIC:
            _fail(2, f"{file} is not an RDB file")
    settings = _settings()
    result: dict[str, Any] = {"file": str(file.resolve()), "db": settings.redis_db}
    try:
        server, client = start_restored(file, port)
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


__all__ = ["compare", "register", "sample_keys", "start_restored"]
