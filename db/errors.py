"""Exceptions of the data layer.

    DataError
    ├── NotFound              the row the caller named does not exist
    ├── Conflict              a unique key is taken, or the row changed since it was read
    ├── InvalidData           a value breaks a foreign key, a check or a NOT NULL column
    ├── UnknownLookup         a lookup table name that is not tiers, statuses or countries
    └── DatabaseUnavailable   the database could not be reached or dropped the connection

psycopg and SQLAlchemy errors are translated here, at the boundary, with ``raise ... from exc``;
callers above the data layer never import either library's exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg.errors
from sqlalchemy import exc as sa_exc


class DataError(Exception):
    """Root of every error raised by the data layer."""


class NotFound(DataError, LookupError):
    """The row the caller named does not exist."""


class Conflict(DataError):
    """A unique key is already taken, or an expected version no longer matches."""


class InvalidData(DataError, ValueError):
    """A value breaks a constraint other than uniqueness, or a field is not writable."""


class UnknownLookup(DataError, LookupError):
    """A lookup table name outside the known set."""


class DatabaseUnavailable(DataError):
    """The database did not answer, refused the connection, or the connection died."""


def translate(exc: BaseException) -> DataError | None:
    """The DataError for a driver or SQLAlchemy error, or None when it is a bug to surface."""
    if isinstance(exc, DataError):
        return exc
    orig = getattr(exc, "orig", None)
    if isinstance(exc, sa_exc.IntegrityError):
        if isinstance(orig, psycopg.errors.UniqueViolation) or "UNIQUE" in str(orig):
            return Conflict(_first_line(orig or exc))
        return InvalidData(_first_line(orig or exc))
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(_first_line(orig or exc))
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return DatabaseUnavailable(_first_line(orig or exc))
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(_first_line(exc))
    if isinstance(exc, sa_exc.DataError):
        # Out-of-range numbers, malformed dates: the caller's input, not the database.
        return InvalidData(_first_line(orig or exc))
    return None


@contextmanager
def translating() -> Iterator[None]:
    """Re-raise driver and SQLAlchemy errors of the block as DataError subclasses."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _first_line(exc: BaseException | object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
