"""The daily RDB backup: BGSAVE, wait until LASTSAVE moves, copy the dump, keep the newest N.

What is saved is the durable role's master (:func:`backed_up_node`, for the job and ``cachectl
backup`` alike): it holds what cannot be rebuilt (write-behind streams, platform state, the
broker's queues), while the cache role's entries are refilled from the database.

The worker must see the master's dump file. In production REDIS_DUMP_FILES names the dump of
every node as mounted into the worker (read-only data volumes): after a failover the master is
another node, so the copy is taken from the file the save just wrote (modified at LASTSAVE or
later), and the worker's Redis user needs only BGSAVE and LASTSAVE. Without the setting the
path comes from the server's own ``CONFIG GET dir`` / ``dbfilename`` (development, where the
user may run CONFIG). Where neither works the job stores a ``failed`` report that says why;
it does not retry, since waiting does not fix a permission or a mount.

The copy is named after the period (``dump-2025-11-25.rdb``): a second run for the same day
replaces it rather than adding one. It is written to a temporary name and renamed, so a
reader never sees half a file, and it must start with the RDB magic ``REDIS``.

Then the copy is loaded into a private redis-server (tasks/jobs/loaded_copy.py): a copy that
does not load is a failed backup, and the loaded server gives the copy's inventory. The
manifest beside it (tasks/jobs/manifest.py: sha256 and size, inventory, the Redis version and
run_id) is what ``cachectl restore`` checks the file and the restored node against. With
BACKUP_COPY_DIR (a second volume: another disk, a mounted remote share) the copy and its
manifest are also written there, read back and checked, and pruned to the same count.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from cache.errors import CacheUnavailable
from cache.keys import Keys
from services import Role, Services
from tasks.jobs import manifest as manifests
from tasks.jobs.base import FAILED, OK, JobContext, Report
from tasks.jobs.inventory import Inventory, take_inventory
from tasks.jobs.loaded_copy import LoadError, load_copy

KEEP: Final = 7  # a week of daily copies
WAIT_SECONDS: Final = 600.0  # under the task's soft time limit
RDB_MAGIC: Final = b"REDIS"
BACKED_UP: Final[Role] = "durable"


def backed_up_node(services: Services) -> Any:
    """The client of the node a backup saves (the master of the :data:`BACKED_UP` role)."""
    return services.redis(BACKED_UP)


class BackupError(Exception):
    """The backup cannot be made from here (permissions, paths); retrying will not help."""


def _server_seconds(client: Any) -> int:
    seconds, _micro = client.time()
    return int(seconds)


def save_and_wait(client: Any, timeout: float = WAIT_SECONDS) -> int:
    """BGSAVE and wait until LASTSAVE moves past its value before; the new LASTSAVE.

    LASTSAVE has one-second resolution: a save finishing in the second of the previous one
    would be invisible, so the BGSAVE waits for the server clock to pass LASTSAVE first.
    """
    before = int(client.lastsave().timestamp())
    deadline = time.monotonic() + timeout
    while _server_seconds(client) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        client.bgsave()
    except ResponseError as exc:
        if "in progress" not in str(exc):
            raise
        # A save already running (another job, the server's own schedule) also moves
        # LASTSAVE: wait for it, then ask again so the copy holds this moment's data.
        _wait_moved(client, before, deadline)
        before = int(client.lastsave().timestamp())
        client.bgsave(schedule=True)
    return _wait_moved(client, before, deadline)


def _wait_moved(client: Any, before: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        saved = int(client.lastsave().timestamp())
        if saved > before:
            status = client.info("persistence").get("rdb_last_bgsave_status")
            if status != "ok":
                raise BackupError(f"BGSAVE finished with status {status!r}")
            return saved
        time.sleep(0.1)
    raise BackupError("LASTSAVE did not move: the background save did not finish in time")


def dump_path(client: Any, candidates: Sequence[Path] = (), saved: int = 0) -> Path:
    """The dump to copy: the newest of ``candidates`` written by the save at ``saved`` (its
    LASTSAVE), or, with no candidates, the server's own CONFIG GET dir/dbfilename."""
    if candidates:
        return _fresh_dump(candidates, saved)
    try:
        directory = client.config_get("dir").get("dir")
        filename = client.config_get("dbfilename").get("dbfilename")
    except ResponseError as exc:
        raise BackupError(f"CONFIG GET refused ({exc}); the job's Redis user needs it") from exc
    if not directory or not filename:
        raise BackupError("CONFIG GET dir/dbfilename answered nothing")
    return Path(str(directory)) / str(filename)


def _fresh_dump(candidates: Sequence[Path], saved: int) -> Path:
    mtimes: dict[Path, float] = {}
    for path in candidates:
        with contextlib.suppress(OSError):
            mtimes[path] = path.stat().st_mtime
    # LASTSAVE and mtime both come from the Redis host's clock, LASTSAVE rounded down.
    fresh = [(mtime, path) for path, mtime in mtimes.items() if mtime >= saved - 1]
    if not fresh:
        seen = ", ".join(f"{p} ({'older' if p in mtimes else 'absent'})" for p in candidates)
        raise BackupError(
            f"no dump written by the save at LASTSAVE {saved} among REDIS_DUMP_FILES: {seen};"
            " mount every Redis node's data directory into the worker"
        )
    return max(fresh)[1]


def copy_dump(source: Path, target_dir: Path, label: str) -> Path:
    if not os.access(source, os.R_OK):
        raise BackupError(
            f"{source} is not readable here: run the backup on the Redis host or mount its "
            "data directory into the worker"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"dump-{label}.rdb"
    partial = target.with_suffix(".rdb.partial")
    shutil.copyfile(source, partial)
    with partial.open("rb") as fh:
        if fh.read(len(RDB_MAGIC)) != RDB_MAGIC:
            partial.unlink()
            raise BackupError(f"{source} is not an RDB file")
    manifests.durable_rename(partial, target)
    return target


def prune(target_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` copies (names sort by period) and their manifests;
    the deleted copies' names."""
    copies = sorted(target_dir.glob("dump-*.rdb"))
    doomed = copies[: max(0, len(copies) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
        manifests.manifest_path(path).unlink(missing_ok=True)
    return [path.name for path in doomed]


def inventory_of(copy: Path, keys: Keys) -> Inventory:
    """The copy's inventory, read from a private redis-server loaded from it."""
    try:
        server, _ = load_copy(copy)
    except LoadError as exc:
        raise BackupError(f"the copy {copy} does not load: {exc}") from exc
    try:
        return take_inventory(server.client, keys)
    finally:
        server.stop()


def write_manifest(client: Any, copy: Path, label: str, keys: Keys, saved: int) -> dict[str, Any]:
    server = client.info("server")
    manifest = {
        "version": manifests.VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": label,
        "key_prefix": keys.prefix,
        "files": {copy.name: manifests.describe(copy)},
        "redis": {
            "version": str(server.get("redis_version", "")),
            "run_id": str(server.get("run_id", "")),
            "role": str(client.info("replication").get("role", "")),
            "lastsave": saved,
        },
        "inventory": inventory_of(copy, keys),
    }
    manifests.write_json(manifests.manifest_path(copy), manifest)
    return manifest


def mirror(copy: Path, copy_dir: Path, keep: int) -> dict[str, Any]:
    """The copy and its manifest on the second volume; a failure there is a failed backup."""
    try:
        mirrored = manifests.mirror(copy, copy_dir)
        pruned = prune(copy_dir, keep)
    except (OSError, manifests.ManifestError) as exc:
        raise BackupError(f"the copy to BACKUP_COPY_DIR {copy_dir} failed: {exc}") from exc
    return {"copy": str(mirrored.resolve()), "pruned": pruned}


def backup(
    client: Any,
    target_dir: Path,
    label: str,
    *,
    keep: int = KEEP,
    dump_files: Sequence[Path] = (),
    keys: Keys | None = None,
    copy_dir: Path | None = None,
) -> dict[str, Any]:
    """The whole backup; raises BackupError (not retried) or RedisError (retried).

    ``keys`` gives the prefix the inventory groups keys by (default: no prefix);
    ``copy_dir`` the second volume, if any."""
    if copy_dir is not None and copy_dir.resolve() == target_dir.resolve():
        raise BackupError(f"BACKUP_COPY_DIR is BACKUP_DIR ({target_dir}): give it another volume")
    started = time.monotonic()
    saved = save_and_wait(client)
    source = dump_path(client, dump_files, saved)
    copy = copy_dump(source, target_dir, label)
    manifest = write_manifest(client, copy, label, Keys("") if keys is None else keys, saved)
    done = {
        "lastsave": saved,
        "source": str(source),
        "copy": str(copy.resolve()),
        "manifest": str(manifests.manifest_path(copy).resolve()),
        "bytes": copy.stat().st_size,
        "sha256": manifest["files"][copy.name]["sha256"],
        "keys": sum(db["keys"] for db in manifest["inventory"].values()),
        "pruned": prune(target_dir, keep),
        "kept": sorted(path.name for path in target_dir.glob("dump-*.rdb")),
    }
    if copy_dir is not None:
        done["second_copy"] = mirror(copy, copy_dir, keep)
    done["seconds"] = round(time.monotonic() - started, 3)
    return done


def run(ctx: JobContext, target_dir: Path | None = None, keep: int = KEEP) -> Report:
    settings = ctx.settings
    target_dir = Path(settings.backup_dir) if target_dir is None else target_dir
    try:
        done = backup(
            backed_up_node(ctx.services), target_dir, ctx.period, keep=keep,
            dump_files=settings.dump_files, keys=ctx.cache.keys,
            copy_dir=settings.copy_dir,
        )  # fmt: skip
    except (BackupError, ResponseError) as exc:
        # Refused (ACL, a renamed command) or impossible from here: a report, not a retry.
        return Report(FAILED, {"target_dir": str(target_dir)}, [f"backup failed: {exc}"])
    except RedisError as exc:  # connection lost or timed out: worth a retry
        raise CacheUnavailable(f"backup: {exc}") from exc
    return Report(OK, done)
