"""The URL settings' checks (Redis, broker, result backend, database) and their masking.

Each check asks the library that will use the URL what it accepts (kombu's transports,
Celery's backends, SQLAlchemy's parser and dialects), so what passes at start-up runs later.
A check returns the URL or raises ValueError; the message never holds the URL's password.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, urlsplit


def mask_url(url: str) -> str:
    """Hide the password of a URL: redis://user:secret@host -> redis://user:****@host."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return parts._replace(netloc=netloc).geturl()


def _port_checked(parts: SplitResult) -> SplitResult:
    """``parts``, once its port reads as one (urlsplit raises ValueError only when asked)."""
    if parts.port is not None and parts.port == 0:
        raise ValueError("port 0 is no port")
    return parts


def _scheme_in(url: str, schemes: set[str], scheme: str | None = None) -> None:
    parts = _port_checked(urlsplit(url))
    found = scheme or parts.scheme
    if found not in schemes:
        raise ValueError(f"unknown scheme {found!r}: one of {', '.join(sorted(schemes))}")


def check_redis_url(url: str) -> str:
    parts = _port_checked(urlsplit(url))
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("needs a host: redis[s]://host[:port][/db]")
    return url


def check_broker_url(url: str) -> str:
    """One URL, or several joined by ';' (sentinel://...;sentinel://...), of kombu's table
    of transports."""
    from kombu.transport import TRANSPORT_ALIASES

    for chunk in url.split(";"):
        _scheme_in(chunk.strip(), set(TRANSPORT_ALIASES))
    return url


def check_backend_url(url: str) -> str:
    """A Celery result backend URL; ``db+<SQLAlchemy URL>`` is its database backend."""
    from celery.app.backends import BACKEND_ALIASES

    for chunk in (part.strip() for part in url.split(";")):
        scheme = "db" if chunk.startswith("db+") else None
        _scheme_in(chunk, {*BACKEND_ALIASES, "db"}, scheme)
    return url


# The dialects SQLAlchemy ships: a URL is checked against them without importing SQLAlchemy,
# which a process that only enqueues tasks never loads (the engine checks the driver).
_DIALECTS: Final = frozenset({"postgresql", "sqlite", "mysql", "mariadb", "oracle", "mssql"})
_DATABASE_SCHEME: Final = re.compile(r"([a-z0-9]+)(?:\+([a-z0-9_]+))?")


def check_database_url(url: str) -> str:
    """``dialect[+driver]://...`` with a dialect SQLAlchemy has."""
    scheme, sep, _rest = url.partition("://")
    found = _DATABASE_SCHEME.fullmatch(scheme) if sep else None
    if found is None or found.group(1) not in _DIALECTS:
        dialects = ", ".join(sorted(_DIALECTS))
        raise ValueError(f"not a database URL: expected dialect[+driver]:// of {dialects}")
    return url
