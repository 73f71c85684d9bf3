"""JSON-ready values: ISO dates, UTC timestamps with offset, money as fixed two-decimal strings.

Money is a string ("19.99"), never a float, so totals round-trip exactly through JSON and the
cache. Timestamps always carry "+00:00": SQLite hands them back naive, PostgreSQL in the
session's time zone, and the cache must not see two spellings of one instant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

CENT = Decimal("0.01")


def iso_date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def iso_datetime(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)  # SQLite stores UTC without an offset
    return value.astimezone(dt.UTC).isoformat()


def money(value: Decimal | float | int | None) -> str:
    """A two-decimal string; None (the SUM of no rows) is zero."""
    if value is None:
        return "0.00"
    if isinstance(value, float):
        value = Decimal(repr(value))  # SQLite sums NUMERIC as REAL; repr is the shortest form
    return str(Decimal(value).quantize(CENT))


def member(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A members row as the JSON-ready dict every member-returning function gives."""
    return {
        "id": row["id"],
        "email": row["email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "status": row["status"],
        "tier": row["tier"],
        "country": row["country"],
        "birth_date": iso_date(row["birth_date"]),
        "joined_at": iso_datetime(row["joined_at"]),
        "updated_at": iso_datetime(row["updated_at"]),
        "last_seen_at": iso_datetime(row["last_seen_at"]),
        "version": row["version"],
    }


def parse_date(value: object, field: str) -> dt.date | None:
    """A date from a date or an ISO string; raises ValueError naming the field."""
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{field}: expected an ISO date, got {value!r}")


def parse_datetime(value: object, field: str) -> dt.datetime | None:
    """A UTC datetime from a datetime or an ISO string; naive values are taken as UTC."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{field}: expected an ISO timestamp, got {value!r}") from None
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise ValueError(f"{field}: expected an ISO timestamp, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
