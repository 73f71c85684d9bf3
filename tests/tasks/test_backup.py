"""The RDB backup and the security audit against redis-servers started for the test (they need
BGSAVE, CONFIG and ACL, which a shared server's clients should not be using)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from cache.keys import Keys
from config import Settings, load_settings
from services import Services
from tasks.jobs import audit
from tasks.jobs.backup import BackupError, backed_up_node, backup, prune, run
from tasks.jobs.base import JobContext
from tasks.jobs.manifest import ManifestError, read_verified
from tests.support.redis_procs import RedisProcess, start_redis


def test_backup_saves_copies_and_keeps_the_newest(tmp_path: Path) -> None:
    target, second = tmp_path / "backups", tmp_path / "remote"
    with start_redis() as proc:
        client = proc.client()
        client.set("k", os.urandom(2000))  # incompressible: the RDB holds it whole
        client.set("p:member:1", "record", ex=600)
        entry = client.xadd("p:sys:{wb}:stream", {"e": "1"}).decode()
        before = int(client.lastsave().timestamp())
        first = backup(client, target, "2031-03-01", keep=2, keys=Keys("p:"), copy_dir=second)
        assert first["lastsave"] > before
        copy = Path(first["copy"])
        assert copy.name == "dump-2031-03-01.rdb" and copy.read_bytes().startswith(b"REDIS")
        assert first["bytes"] == copy.stat().st_size > 1000 and first["keys"] == 3
        # The manifest: the file's checksum, the server, and what the copy holds.
        manifest = read_verified(copy)
        assert manifest["files"] == {
            copy.name: {
                "sha256": hashlib.sha256(copy.read_bytes()).hexdigest(),
                "bytes": first["bytes"],
            }
        }
        server = client.info("server")
        assert manifest["redis"] | {"lastsave": 0} == {
            "version": server["redis_version"], "run_id": server["run_id"], "role": "master",
            "lastsave": 0,
        }  # fmt: skip
        assert manifest["inventory"]["0"]["families"] == {
            "other/string": {"persistent": 1, "volatile": 0},
            "member/string": {"persistent": 0, "volatile": 1},
            "sys:{wb}/stream": {"persistent": 1, "volatile": 0},
        }
        stream = manifest["inventory"]["0"]["streams"]["p:sys:{wb}:stream"]
        assert (stream["length"], stream["last_id"], stream["groups"]) == (1, entry, {})
        # The second copy: the same bytes, its own manifest.
        mirrored = second / copy.name
        assert first["second_copy"]["copy"] == str(mirrored.resolve())
        assert read_verified(mirrored) == manifest and mirrored.read_bytes() == copy.read_bytes()
        # Same period again: replaced, not added. Then two more days: the oldest goes, with
        # its manifest, in both places.
        backup(client, target, "2031-03-01", keep=2, copy_dir=second)
        backup(client, target, "2031-03-02", keep=2, copy_dir=second)
        third = backup(client, target, "2031-03-03", keep=2, copy_dir=second)
        assert third["kept"] == ["dump-2031-03-02.rdb", "dump-2031-03-03.rdb"]
        assert third["pruned"] == third["second_copy"]["pruned"] == ["dump-2031-03-01.rdb"]
        for directory in (target, second):
            assert sorted(path.name for path in directory.iterdir()) == [
                "dump-2031-03-02.manifest.json",
                "dump-2031-03-02.rdb",
                "dump-2031-03-03.manifest.json",
                "dump-2031-03-03.rdb",
            ]
        client.close()
    assert prune(target, 0) == ["dump-2031-03-02.rdb", "dump-2031-03-03.rdb"]
    assert list(target.iterdir()) == []

    # A copy damaged on its volume afterwards is refused, whatever the damage.
    damaged = second / "dump-2031-03-03.rdb"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    with pytest.raises(ManifestError, match="corrupt; restore another copy"):
        read_verified(damaged)
    damaged.write_bytes(data[:-8])
    with pytest.raises(ManifestError, match="truncated or incomplete"):
        read_verified(damaged)
    (second / "dump-2031-03-03.manifest.json").unlink()
    with pytest.raises(ManifestError, match=r"no manifest dump-2031-03-03\.manifest\.json"):
        read_verified(damaged)


def test_a_second_directory_that_cannot_be_written_fails_the_backup(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the mount should be")
    with start_redis() as proc:
        client = proc.client()
        client.set("k", "v")
        with pytest.raises(BackupError, match="the copy to BACKUP_COPY_DIR"):
            backup(client, tmp_path / "b", "2031-03-01", copy_dir=blocked)
        with pytest.raises(BackupError, match="BACKUP_COPY_DIR is BACKUP_DIR"):
            backup(client, tmp_path / "b", "2031-03-02", copy_dir=tmp_path / "b" / ".")
        client.close()
    assert (tmp_path / "b" / "dump-2031-03-01.rdb").exists()  # the first copy stays


def _settings(proc: RedisProcess, user: str, password: str, **more: Any) -> Settings:
    """The worker's settings with one Redis (both roles) on ``proc`` as ``user``."""
    return load_settings(
        redis_host="127.0.0.1",
        redis_port=proc.port,
        redis_username=user,
        redis_password=password,
        _env_file=None,
        **more,
    )


@contextmanager
def _job(settings: Settings, period: str) -> Iterator[JobContext]:
    """The daily backup's JobContext over the services a worker opens from ``settings``."""
    services = Services.open(settings)
    try:
        yield JobContext(services.cache, None, settings, "daily", period, services)  # type: ignore[arg-type]
    finally:
        services.close()


def test_the_job_saves_the_durable_roles_node_not_the_caches(tmp_path: Path) -> None:
    """The cache role and the durable role on two servers: the copy is the durable one's (its
    server, its keys), as ``cachectl backup``'s is, and the cache's server is not saved."""
    with start_redis() as cache_node, start_redis() as durable_node:
        cache_node.client().set("p:member:1", "evictable")
        durable = durable_node.client()
        durable.xadd("p:sys:{wb}:stream", {"e": "1"})
        durable.set("p:sys:state", "kept")
        cache_saved = cache_node.client().lastsave()
        settings = load_settings(
            redis_host="127.0.0.1",
            redis_port=cache_node.port,
            durable_redis_host="127.0.0.1",
            durable_redis_port=durable_node.port,
            redis_key_prefix="p:",
            backup_dir=str(tmp_path / "b"),
            _env_file=None,
        )
        with _job(settings, "2031-03-05") as context:
            assert backed_up_node(context.services) is context.services.redis("durable")
            report = run(context)
        assert report.status == "ok", report.alert
        manifest = read_verified(Path(report.payload["copy"]))
        assert manifest["redis"]["run_id"] == durable.info("server")["run_id"]
        assert manifest["inventory"]["0"]["families"] == {
            "sys:state/string": {"persistent": 1, "volatile": 0},
            "sys:{wb}/stream": {"persistent": 1, "volatile": 0},
        }
        assert report.payload["source"] == str(durable_node.dir / "dump.rdb")
        assert cache_node.client().lastsave() == cache_saved
        durable.close()


def test_a_user_without_config_gets_a_failed_report_not_a_retry(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text("user default on nopass ~* &* +@all\nuser cache on >cache-pw ~* +@all -config\n")
    with start_redis(aclfile=acl) as proc:
        client = redis.Redis(
            host="127.0.0.1", port=proc.port, username="cache", password="cache-pw"
        )
        with pytest.raises(redis.ResponseError):
            client.config_get("dir")
        client.close()
        settings = _settings(proc, "cache", "cache-pw", backup_dir=str(tmp_path / "b"))
        with _job(settings, "2031-03-01") as context:
            report = run(context)
    assert report.status == "failed"
    assert "CONFIG GET refused" in (report.alert or "")


def test_without_config_the_dump_files_setting_finds_the_masters_fresh_dump(
    tmp_path: Path,
) -> None:
    """Production: the worker user may not run CONFIG; REDIS_DUMP_FILES names each node's
    dump as mounted into the worker, and the one the save just wrote is copied, whichever node
    is master now."""
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default on nopass ~* &* +@all\n"
        "user worker on >worker-pw ~* -@all +@read +@write +bgsave +lastsave +info +time"
        " +client|setname\n"
    )
    with start_redis(aclfile=acl) as master, start_redis(aclfile=acl) as other:
        stale = other.dir / "dump.rdb"
        other.client().save()  # an older dump of another node
        os.utime(stale, (1, 1))
        master.client().set("k", b"v" * 3000)
        files = [stale, master.dir / "dump.rdb", tmp_path / "absent" / "dump.rdb"]
        settings = _settings(
            master,
            "worker",
            "worker-pw",
            backup_dir=str(tmp_path / "b"),
            redis_dump_files=",".join(map(str, files)),
        )
        assert settings.dump_files == files
        with _job(settings, "2031-03-04") as context:
            report = run(context)
        assert report.status == "ok", report.alert
        assert report.payload["source"] == str(master.dir / "dump.rdb")
        copy = Path(report.payload["copy"])
        assert copy.parent == tmp_path / "b" and copy.read_bytes().startswith(b"REDIS")
        # Only stale or absent candidates: a failed report naming each, no copy.
        settings = _settings(master, "worker", "worker-pw", redis_dump_files=f"{stale},{files[2]}")
        with _job(settings, "2031-03-04") as context:
            failed = run(context, tmp_path / "c")
    assert failed.status == "failed"
    assert f"{stale} (older)" in (failed.alert or "") and "(absent)" in (failed.alert or "")
    assert not (tmp_path / "c").exists()


def test_unreadable_dump_is_a_backup_error(tmp_path: Path) -> None:
    from tasks.jobs.backup import copy_dump

    with pytest.raises(BackupError, match="not readable here"):
        copy_dump(tmp_path / "absent.rdb", tmp_path / "b", "x")


def test_audit_of_a_hardened_server_against_an_open_one(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user admin on >admin-pw ~* &* +@all\n"
        "user cache on >cache-pw ~app:* -@all +@read +@write +@connection +info -keys\n"
    )
    with start_redis(aclfile=acl) as proc:
        admin = redis.Redis(host="127.0.0.1", port=proc.port, username="admin", password="admin-pw")
        cache = redis.Redis(host="127.0.0.1", port=proc.port, username="cache", password="cache-pw")
        as_admin = audit.audit(admin)
        as_cache = audit.audit(cache)
        admin.close()
        cache.close()
    admin_alerts = {f["detail"] for f in as_admin if f["severity"] in audit.ALERTING}
    assert admin_alerts == {
        "ACL user 'admin' may run every command on every key",
        "user 'admin' may run FLUSHALL",
        "user 'admin' may run FLUSHDB",
        "user 'admin' may run KEYS *",
        "user 'admin' may run DEBUG SLEEP",
        "user 'admin' may run SHUTDOWN",
        "user 'admin' may run CONFIG SET",
        "user 'admin' may run MODULE LOAD",
    }
    # The cache's own user may not read CONFIG or ACL: said so, not an alert.
    assert [f["severity"] for f in as_cache if f["check"] in ("config", "acl")] == ["info", "info"]
    assert not [f for f in as_cache if f["severity"] in audit.ALERTING]
