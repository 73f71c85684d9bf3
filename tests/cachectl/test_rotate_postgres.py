"""cachectl rotate postgres: the app's password moves between twin roles on a throwaway
cluster with SCRAM authentication, under traffic from the app's engines (pre-pinged pools
that open new connections all along): the old "process" keeps working until it is gone, the
new one works from its start, and no query fails. Then back again."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from cachectl.main import app as cachectl
from cachectl.rotate import RotationError
from cachectl.rotate_postgres import can_login, rotate_postgres_password, set_password
from db.engine import make_engine
from tests.support.pg_cluster import PgCluster, password_cluster
from tests.support.traffic import Traffic

pytestmark = pytest.mark.slow

ROLE, DATABASE = "membership", "membership"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with password_cluster() as made:
        with psycopg.connect(made.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        yield made


class Queries(Traffic[Engine]):
    """Threads writing and reading through the current engine (the process serving them),
    counted by engine."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(self.call, threads=3)
        self.engine = engine

    def call(self, n: int) -> Engine:
        engine = self.engine
        if n and n % 25 == 0:
            # A pool that opens connections all along: every one logs in afresh.
            engine.pool.dispose()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
            conn.execute(text("SELECT count(*) FROM probe")).scalar_one()
        return engine


def _rotate_under_traffic(cluster: PgCluster, app_url: str, new: str) -> str:
    old_engine = make_engine(app_url, pool_size=2, max_overflow=2)
    engines = [old_engine]
    try:
        with Queries(old_engine) as traffic:
            traffic.served(old_engine, 30)

            def clients_moved(moved: str) -> None:
                traffic.served(old_engine, 30)  # both roles log in: the old process goes on
                new_engine = make_engine(moved, pool_size=2, max_overflow=2)
                engines.append(new_engine)
                traffic.engine = new_engine  # the restarted process takes the traffic
                traffic.served(new_engine, 30)
                old_engine.dispose()  # the old process is gone

            moved = rotate_postgres_password(
                cluster.admin_url, app_url, new, clients_moved=clients_moved
            )
            traffic.served(engines[-1], 30)
        assert traffic.failures == []
        return moved
    finally:
        for engine in engines:
            engine.dispose()


def test_postgres_password_rotates_there_and_back_under_traffic(cluster: PgCluster) -> None:
    first = secrets.token_urlsafe(18)
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        set_password(conn, ROLE, first)
    app_url = cluster.url(ROLE, first, DATABASE)
    with psycopg.connect(app_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (n integer)")

    second = secrets.token_urlsafe(18)
    moved = _rotate_under_traffic(cluster, app_url, second)
    assert moved == cluster.url(f"{ROLE}_alt", second, DATABASE)
    assert not can_login(app_url) and can_login(moved)
    # The twin acts as the owner: what it creates (a migration) is the owner's.
    with psycopg.connect(moved.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE made_by_twin (n integer)")
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_twin'"
        ).fetchone()
    assert owner == (ROLE,)

    third = secrets.token_urlsafe(18)
    back = _rotate_under_traffic(cluster, moved, third)
    assert back == cluster.url(ROLE, third, DATABASE)
    assert not can_login(moved) and not can_login(app_url) and can_login(back)
    # The verifier, never the password, reached the server.
    with psycopg.connect(cluster.admin_url) as conn:
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)
        ).fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$") and third not in stored[0]


def test_bad_rotations_change_nothing(cluster: PgCluster) -> None:
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE other LOGIN")
        set_password(conn, "other", "kept-password")
    url = cluster.url("other", "kept-password", DATABASE)
    with pytest.raises(RotationError, match="the old one"):
        rotate_postgres_password(cluster.admin_url, url, "kept-password", clients_moved=None)
    with pytest.raises(RotationError, match="no role"):
        rotate_postgres_password(
            cluster.admin_url, cluster.url("ghost", "x", DATABASE), "y", clients_moved=None
        )
    wrong_admin = cluster.url("other", "kept-password", "postgres")
    with pytest.raises(RotationError, match="preparing other_alt failed"):
        rotate_postgres_password(wrong_admin, url, "new-password", clients_moved=None)
    assert can_login(url)


def test_the_command_reads_its_secrets_from_the_environment(cluster: PgCluster) -> None:
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE cli LOGIN")
        set_password(conn, "cli", "cli-password-1")
    env = {
        "DATABASE_URL": cluster.url("cli", "cli-password-1", DATABASE),
        "POSTGRES_ADMIN_URL": cluster.admin_url,
    }
    runner = CliRunner()
    missing = runner.invoke(cachectl, ["rotate", "postgres", "--grace-s", "0"], env=env)
    assert missing.exit_code == 2 and "POSTGRES_NEW_PASSWORD is not set" in missing.output
    env["POSTGRES_NEW_PASSWORD"] = "cli-password-2"
    done = runner.invoke(cachectl, ["rotate", "postgres", "--grace-s", "0"], env=env)
    assert done.exit_code == 0, done.output
    assert "logs in as cli_alt" in done.output and "cli-password-2" not in done.output
    assert can_login(cluster.url("cli_alt", "cli-password-2", DATABASE))
    assert not can_login(env["DATABASE_URL"])
