"""deploy/render.py and the templates it renders, without any server."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

import pytest

from deploy.render import (
    TEMPLATE_DIR,
    RenderError,
    main,
    read_env_file,
    render_dir,
    render_text,
    required,
    strip_comments,
)
from tests.deploy.conftest import SECRET_NAMES, generate_secrets

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy-redis-production.sh"


def directives(path: Path) -> dict[str, list[str]]:
    """redis.conf directives: name (with the Sentinel sub-directive) -> values in order."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        name = " ".join(words[:2]) if words[0] == "sentinel" else words[0]
        rest = words[2:] if words[0] == "sentinel" else words[1:]
        out.setdefault(name, []).append(" ".join(rest))
    return out


def test_placeholders_defaults_and_hashes() -> None:
    template = "a ${NAME}\nb ${OTHER:-fallback}\nc #${NAME|sha256}\nd $HOME ${lower}x\n"
    with pytest.raises(RenderError, match="malformed placeholder"):
        render_text(template, {"NAME": "secret"})
    text = render_text(template.replace("${lower}", ""), {"NAME": "secret"})
    digest = hashlib.sha256(b"secret").hexdigest()
    assert text == f"a secret\nb fallback\nc #{digest}\nd $HOME x\n"
    assert render_text("${OTHER:-x}", {"OTHER": "set"}) == "set"
    assert required(template) == {"NAME"}


def test_missing_and_unsafe_values_are_refused_all_at_once() -> None:
    with pytest.raises(RenderError, match="missing A, B") as missing:
        render_text("${A} ${B} ${C:-ok}", {"A": ""})
    assert "C" not in str(missing.value)
    for value in ("two words", "line\nbreak", 'quo"te', "back\\slash", "tab\t"):
        with pytest.raises(RenderError, match="whitespace, quote or control character in A"):
            render_text("masterauth ${A}", {"A": value})


def test_acl_output_has_no_comments(tmp_path: Path) -> None:
    assert strip_comments("# c\n\n  user a on\n#x\nuser b off\n") == "user a on\nuser b off\n"
    render_dir(tmp_path, generate_secrets())
    for line in (tmp_path / "users.acl").read_text().splitlines():
        assert line.startswith("user "), line


def test_render_dir_writes_private_files_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RenderError, match="REDIS_APP_PASSWORD"):
        render_dir(out, {k: v for k, v in generate_secrets().items() if k != "REDIS_APP_PASSWORD"})
    assert not out.exists()
    written = render_dir(out, generate_secrets())
    assert sorted(p.name for p in written) == [
        "redis-master.conf",
        "redis-replica.conf",
        "sentinel.conf",
        "users.acl",
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_command_line_reads_an_env_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = generate_secrets()
    env_file = tmp_path / ".env.production"
    env_file.write_text("# comment\n" + "".join(f"{k}='{v}'\n" for k, v in secrets.items()))
    assert read_env_file(env_file) == secrets
    assert main(["--env-file", str(env_file), "--out", str(tmp_path / "out")]) == 0
    assert secrets["REDIS_APP_PASSWORD"] not in capsys.readouterr().out
    env_file.write_text("not an assignment\n")
    assert main(["--env-file", str(env_file), "--out", str(tmp_path / "bad")]) == 1


def test_the_templates_need_only_what_the_deploy_script_generates() -> None:
    needed: set[str] = set()
    for template in TEMPLATE_DIR.glob("*.template"):
        needed |= required(template.read_text())
    generated = set(re.findall(r"^\s+([A-Z_]+_PASSWORD)\b", SCRIPT.read_text(), re.M))
    assert generated == set(SECRET_NAMES)
    assert needed <= generated


def test_master_and_replica_differ_only_in_replication(tmp_path: Path) -> None:
    render_dir(tmp_path, generate_secrets())
    master = directives(tmp_path / "redis-master.conf")
    replica = directives(tmp_path / "redis-replica.conf")
    differ = {k for k in master.keys() | replica.keys() if master.get(k) != replica.get(k)}
    assert differ == {"replicaof", "min-replicas-to-write"}
    assert master["min-replicas-to-write"] == ["1"]
    assert replica["min-replicas-to-write"] == ["0"]


def test_the_chosen_settings(tmp_path: Path) -> None:
    render_dir(tmp_path, generate_secrets())
    master = directives(tmp_path / "redis-master.conf")
    assert master["appendonly"] == ["yes"]
    assert master["appendfsync"] == ["everysec"]
    assert master["save"] == ["3600 1 300 100 60 10000"]
    assert master["maxmemory-policy"] == ["volatile-lfu"]
    assert master["protected-mode"] == ["yes"]
    assert master["aclfile"] == ["/data/users.acl"]
    assert "rename-command" not in master
    assert "requirepass" not in master  # passwords live in the ACL file
    sentinel = directives(tmp_path / "sentinel.conf")
    assert sentinel["sentinel monitor"] == ["mymaster redis-master 6379 2"]
    assert sentinel["sentinel down-after-milliseconds"] == ["mymaster 3000"]
    assert sentinel["sentinel failover-timeout"] == ["mymaster 5000"]


def test_each_redis_role_is_rendered_with_its_own_guarantees(tmp_path: Path) -> None:
    env = generate_secrets()
    assert main_with_env(env, tmp_path) == 0
    cache, durable = tmp_path / "cache", tmp_path / "durable"
    for role in (cache, durable):
        assert {p.name for p in role.iterdir()} == {
            "redis-master.conf",
            "redis-replica.conf",
            "sentinel.conf",
            "users.acl",
        }
    master, replica = (
        directives(cache / "redis-master.conf"),
        directives(cache / "redis-replica.conf"),
    )
    # The cache role: evicts among keys with a TTL; its replica lost, writes go on.
    assert master["maxmemory-policy"] == replica["maxmemory-policy"] == ["volatile-lfu"]
    assert master["min-replicas-to-write"] == ["0"]
    assert directives(cache / "sentinel.conf")["sentinel monitor"] == [
        "mymaster redis-master 6379 2"
    ]
    # The durable role: never evicts, AOF, a write needs the replica.
    master = directives(durable / "redis-master.conf")
    replica = directives(durable / "redis-replica.conf")
    assert master["maxmemory-policy"] == replica["maxmemory-policy"] == ["noeviction"]
    assert master["appendonly"] == ["yes"] and master["min-replicas-to-write"] == ["1"]
    assert replica["replicaof"] == ["redis-durable-master 6379"]
    assert directives(durable / "sentinel.conf")["sentinel monitor"] == [
        "durable redis-durable-master 6379 2"
    ]
    assert (cache / "users.acl").read_text() == (durable / "users.acl").read_text()


def main_with_env(env: dict[str, str], out: Path) -> int:
    env_file = out.parent / f"{out.name}.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    return main(["--env-file", str(env_file), "--out", str(out), "--roles"])
