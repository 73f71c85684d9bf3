"""The manifest of a backup copy: what the copy must be, and what it holds.

``dump-<period>.rdb`` gets ``dump-<period>.manifest.json`` beside it::

    {"version": 1, "created_at": "2026-12-06T00:20:03+00:00", "label": "2026-12-06",
     "key_prefix": "membership:",
     "files": {"dump-2026-12-06.rdb": {"sha256": "9f86...", "bytes": 5242880}},
     "redis": {"version": "7.2.4", "run_id": "4c1f...", "role": "master", "lastsave": 1796...},
     "inventory": {"0": {"keys": ..., "families": ..., "streams": ..., "queues": ...}}}

The inventory (tasks/jobs/inventory.py) is taken from the copy itself, loaded in a private
server, so it is exactly what a restore of that file brings back, whatever was written to
the live node since its save.

Every file is written under a temporary name, flushed to disk and renamed, so a reader (and
a copy on a remote volume cut off mid-write) never sees half a file; the manifest is written
after its copy, so a manifest always names a complete file. A restore reads the manifest and
refuses a copy whose size or sha256 differs: a truncated or corrupt file never loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Final

VERSION: Final = 1
SUFFIX: Final = ".manifest.json"
CHUNK: Final = 1 << 20


class ManifestError(Exception):
    """A copy that does not match its manifest, or a manifest that cannot be read."""


def manifest_path(copy: Path) -> Path:
    """``dump-<label>.rdb`` -> ``dump-<label>.manifest.json``."""
    return copy.with_name(copy.name.removesuffix(copy.suffix) + SUFFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_rename(partial: Path, target: Path) -> None:
    """Flush ``partial`` to disk, rename it to ``target`` and flush the directory entry."""
    with partial.open("rb+") as fh:
        os.fsync(fh.fileno())
    partial.replace(target)
    _fsync_dir(target.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    durable_rename(partial, path)


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (temporary name, fsync, rename)."""
    partial = target.with_name(target.name + ".partial")
    try:
        shutil.copyfile(source, partial)
        durable_rename(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def read_manifest(copy: Path) -> dict[str, Any]:
    path = manifest_path(copy)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"no manifest {path.name} beside {copy}") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"the manifest {path} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        raise ManifestError(f"the manifest {path} is not a version {VERSION} manifest")
    if copy.name not in manifest.get("files", {}):
        raise ManifestError(f"the manifest {path} does not name {copy.name}")
    return manifest


def verify(copy: Path, manifest: dict[str, Any]) -> None:
    """Raise ManifestError unless ``copy`` has the size and sha256 its manifest records."""
    recorded = manifest["files"][copy.name]
    size = copy.stat().st_size
    if size != recorded["bytes"]:
        raise ManifestError(
            f"{copy} is {size:,} bytes, its manifest says {recorded['bytes']:,}: "
            "truncated or incomplete; restore another copy"
        )
    digest = sha256_of(copy)
    if digest != recorded["sha256"]:
        raise ManifestError(
            f"{copy} has sha256 {digest}, its manifest says {recorded['sha256']}: "
            "corrupt; restore another copy"
        )


def read_verified(copy: Path) -> dict[str, Any]:
    """The manifest of ``copy``, once the copy is checked against it."""
    manifest = read_manifest(copy)
    verify(copy, manifest)
    return manifest


def mirror(copy: Path, directory: Path) -> Path:
    """Copy ``copy`` and its manifest into ``directory`` (a second volume); the copy there,
    read back and checked against the manifest before the manifest is written."""
    manifest = read_manifest(copy)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / copy.name
    copy_file(copy, target)
    verify(target, manifest)
    copy_file(manifest_path(copy), manifest_path(target))
    return target
