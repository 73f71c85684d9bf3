"""``cachectl rotate postgres``: the app's PostgreSQL password changed without downtime.

A PostgreSQL role has one password, and ALTER ROLE ... PASSWORD at once refuses the old one to
every *new* connection: the processes not yet restarted would fail as soon as their pools
open one. So the app logs in as one of two twin roles, ``<role>`` and ``<role>_alt``, and a
rotation moves it from one to the other::

    1. twin     CREATE ROLE <twin> LOGIN, a member of the current role, SET role = it
                (first rotation only): the twin acts as the current role, owner of the tables
    2. add      ALTER ROLE <twin> PASSWORD '<SCRAM verifier>'    both roles log in
                (verify: a fresh connection as the twin, to the app's database)
    3. move     clients switch DATABASE_URL to the twin (deploy, rolling restart): old
                processes keep working on the old role meanwhile, pooled and new connections
    4. retire   ALTER ROLE <current> PASSWORD NULL; its leftover sessions are ended
                (verify: the old password is refused)

The next rotation moves back from ``<role>_alt`` to ``<role>``. The password travels as a
SCRAM-SHA-256 verifier computed here (libpq's PQencryptPasswordConn), so neither the server's
statement log nor pg_stat_activity ever shows it in clear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from cachectl.rotate import DEFAULT_GRACE_S, RotationError

log = logging.getLogger("cachectl.rotate")

TWIN_SUFFIX: Final = "_alt"
CONNECT_TIMEOUT_S: Final = 5


def twin_of(role: str) -> str:
    """The other role of the pair: ``app`` <-> ``app_alt``."""
    return role.removesuffix(TWIN_SUFFIX) if role.endswith(TWIN_SUFFIX) else role + TWIN_SUFFIX


def _libpq(url: str) -> str:
    """A libpq DSN for a SQLAlchemy-style URL (postgresql+psycopg:// is not libpq's)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_role(url: str, role: str, password: str) -> str:
    """``url`` logging in as ``role`` with ``password``."""
    return make_url(url).set(username=role, password=password).render_as_string(False)


def can_login(url: str) -> bool:
    try:
        with psycopg.connect(_libpq(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def _exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def prepare_twin(conn: psycopg.Connection, current: str, twin: str) -> bool:
    """Step 1: the twin exists and may log in; True when it was created now."""
    if not _exists(conn, current):
        raise RotationError(f"no role {current!r}")
    if _exists(conn, twin):
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(twin)))
        return False
    ident = sql.Identifier(twin)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(current), ident))
    # Objects it creates (migrations) belong to the current role, as if it had made them.
    conn.execute(sql.SQL("ALTER ROLE {} SET role = {}").format(ident, sql.Literal(current)))
    return True


def set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    statement = sql.SQL("ALTER ROLE {} PASSWORD {}")
    conn.execute(statement.format(sql.Identifier(role), sql.Literal(verifier.decode())))


def retire(conn: psycopg.Connection, role: str) -> int:
    """Step 4: ``role`` logs in no more; its sessions left (stragglers) are ended. How many."""
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(role)))
    ended = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
        (role,),
    ).fetchone()
    return int(ended[0]) if ended else 0


def rotate_postgres_password(
    admin_url: str,
    app_url: str,
    new: str,
    *,
    clients_moved: Callable[[str], None] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> str:
    """Move the app from its role in ``app_url`` to the twin with ``new``; the new URL.

    ``clients_moved`` is called with the new URL and returns once the clients use it (by
    default: ``grace_s`` seconds after it is printed).
    """
    parsed = make_url(app_url)
    current, old = parsed.username, parsed.password
    if not current or not new:
        raise RotationError("the app's URL needs a user, and the new password may not be empty")
    if new == old:
        raise RotationError("the new password is the old one")
    twin = twin_of(current)
    moved = with_role(app_url, twin, new)
    try:
        with psycopg.connect(
            _libpq(admin_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            if prepare_twin(conn, current, twin):
                log.info("created role %s, acting as %s", twin, current)
            set_password(conn, twin, new)
    except psycopg.Error as exc:
        raise RotationError(f"preparing {twin} failed: {exc}") from exc
    if not can_login(moved):
        raise RotationError(f"{twin} cannot log in with the new password")
    if clients_moved is not None:
        clients_moved(moved)
    else:
        print(f"move the clients to DATABASE_URL={make_url(moved)!r} within {grace_s:.0f} s")
        time.sleep(grace_s)
    try:
        with psycopg.connect(
            _libpq(admin_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            ended = retire(conn, current)
    except psycopg.Error as exc:
        raise RotationError(f"retiring {current} failed: {exc}") from exc
    if ended:
        log.warning("ended %d session(s) of %s still open after the move", ended, current)
    if old and can_login(app_url):
        raise RotationError(f"{current} still logs in with the old password")
    return moved
