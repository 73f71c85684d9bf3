"""The RDB backup and the security audit against redis-servers started for the test (they need
BGSAVE, CONFIG and ACL, which a shared server's clients should not be using)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from config import load_settings
from tasks.jobs import audit
from tasks.jobs.backup import BackupError, backup, prune, run
from tests.support.redis_procs import start_redis


def test_backup_saves_copies_and_keeps_the_newest(tmp_path: Path) -> None:
    target = tmp_path / "backups"
    with start_redis() as proc:
        client = proc.client()
        client.set("k", os.urandom(2000))  # incompressible: the RDB holds it whole
        before = int(client.lastsave().timestamp())
        first = backup(client, target, "2031-03-01", keep=2)
        assert first["lastsave"] > before
        copy = Path(first["copy"])
        assert copy.name == "dump-2031-03-01.rdb" and copy.read_bytes().startswith(b"REDIS")
        assert first["bytes"] == copy.stat().st_size > 1000
        # Same period again: replaced, not added. Then two more days: the oldest goes.
        backup(client, target, "2031-03-01", keep=2)
        backup(client, target, "2031-03-02", keep=2)
        third = backup(client, target, "2031-03-03", keep=2)
        assert third["kept"] == ["dump-2031-03-02.rdb", "dump-2031-03-03.rdb"]
        assert third["pruned"] == ["dump-2031-03-01.rdb"]
        assert not list(target.glob("*.partial"))
        client.close()
    assert prune(target, 0) == ["dump-2031-03-02.rdb", "dump-2031-03-03.rdb"]


def test_a_user_without_config_gets_a_failed_report_not_a_retry(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text("user default on nopass ~* &* +@all\nuser cache on >cache-pw ~* +@all -config\n")
    with start_redis(aclfile=acl) as proc:
        client = redis.Redis(
            host="127.0.0.1", port=proc.port, username="cache", password="cache-pw"
        )
        with pytest.raises(redis.ResponseError):
            client.config_get("dir")
        # Only what backup.run reads of its JobContext.
        context = SimpleNamespace(
            cache=SimpleNamespace(clients=SimpleNamespace(writer=client)),
            period="2031-03-01",
            settings=load_settings(backup_dir=str(tmp_path / "b"), _env_file=None),
        )
        report = run(context)  # type: ignore[arg-type]
        client.close()
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
        "user worker on >worker-pw ~* -@all +@read +@write +bgsave +lastsave +info +time\n"
    )
    with start_redis(aclfile=acl) as master, start_redis(aclfile=acl) as other:
        stale = other.dir / "dump.rdb"
        other.client().save()  # an older dump of another node
        os.utime(stale, (1, 1))
        worker = redis.Redis(
            host="127.0.0.1", port=master.port, username="worker", password="worker-pw"
        )
        worker.set("k", b"v" * 3000)
        files = [stale, master.dir / "dump.rdb", tmp_path / "absent" / "dump.rdb"]
        settings = load_settings(
            backup_dir=str(tmp_path / "b"),
            redis_dump_files=",".join(map(str, files)),
            _env_file=None,
        )
        assert settings.dump_files == files
        context = SimpleNamespace(
            cache=SimpleNamespace(clients=SimpleNamespace(writer=worker)),
            period="2031-03-04",
            settings=settings,
        )
        report = run(context)  # type: ignore[arg-type]
        assert report.status == "ok", report.alert
        assert report.payload["source"] == str(master.dir / "dump.rdb")
        copy = Path(report.payload["copy"])
        assert copy.parent == tmp_path / "b" and copy.read_bytes().startswith(b"REDIS")
        # Only stale or absent candidates: a failed report naming each, no copy.
        settings = load_settings(redis_dump_files=f"{stale},{files[2]}", _env_file=None)
        context.settings = settings
        failed = run(context, tmp_path / "c")  # type: ignore[arg-type]
        worker.close()
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
