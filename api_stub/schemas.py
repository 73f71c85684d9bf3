"""What a client may send: member bodies, checked before anything reaches the database.

A bad field is a 422 naming it (FastAPI's validation error). Whether a status, tier or
country exists is the database's answer (foreign keys); the routes and the import translate it
back to the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

EMAIL_PATTERN: Final = r"^[^@\s]+@[^@\s]+$"
OLDEST_BIRTH_YEAR: Final = 1900

Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254, pattern=EMAIL_PATTERN)
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
CountryCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z]{2}$")]
Version = Annotated[int, Field(ge=1)]


def _birth_date(value: dt.date | None) -> dt.date | None:
    if value is not None and not dt.date(OLDEST_BIRTH_YEAR, 1, 1) <= value <= dt.date.today():
        raise ValueError(f"must be between {OLDEST_BIRTH_YEAR}-01-01 and today")
    return value


class _MemberFields(BaseModel):
    """The fields a whole member carries, as created and as replaced."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    first_name: Name
    last_name: Name
    country: CountryCode
    status: Code = "active"
    tier: Code = "bronze"
    birth_date: dt.date | None = None

    _check_birth = field_validator("birth_date")(_birth_date)


class MemberCreate(_MemberFields):
    """POST /members and each row of an import."""

    joined_at: dt.datetime | None = None  # imports carry history; default: now

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class MemberReplace(_MemberFields):
    """PUT /members/{id}: the whole member; omitted optional fields take their defaults.

    ``version``, when given, must be the member's current one (optimistic locking: 409).
    """

    version: Version | None = None

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude={"version"})


def _only_birth_date_nullable(schema: dict[str, Any]) -> None:
    """The document says what ``_not_null`` checks: these fields may be absent, not null."""
    for name in _NOT_NULL:
        field = schema["properties"][name]
        options = [option for option in field.pop("anyOf", []) if option.get("type") != "null"]
        field.pop("default", None)
        if len(options) == 1:
            field.update(options[0])


_NOT_NULL: Final = ("email", "first_name", "last_name", "country", "status", "tier")


class MemberPatch(BaseModel):
    """PATCH /members/{id}: only the fields given change; only birth_date may be null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_only_birth_date_nullable)

    email: Email | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    country: CountryCode | None = None
    status: Code | None = None
    tier: Code | None = None
    birth_date: dt.date | None = None
    version: Version | None = None

    _check_birth = field_validator("birth_date")(_birth_date)

    @field_validator(*_NOT_NULL)
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null")
        return value

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"version"})


class BulkUpdate(BaseModel):
    """PATCH /members?status=&tier=&country=: what every selected member gets."""

    model_config = ConfigDict(extra="forbid")

    status: Code | None = None
    tier: Code | None = None

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
