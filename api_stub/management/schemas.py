"""Request bodies of the management API, bounded so no request can ask for unbounded work."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Annotated, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from cache.kinds import KINDS, WARMUPS
from db.reports import JOBS
from workers.routing import MAX_IDS

MAX_DEAD_IDS = 1_000
# A write-behind stream id: <ms>-<seq>.
STREAM_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"
MAX_U64 = 2**64 - 1

MemberId = Annotated[int, Field(ge=1, le=2**63 - 1)]
# The date-time of the schema (RFC 3339; no offset: UTC). Pydantic alone would also take a
# number of seconds ("0.5"), which the schema does not say.
_DATE_TIME: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)


def _date_time_text(value: object) -> object:
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("expected a date-time such as 2031-01-01T00:00:00Z")
    return value


DateTime = Annotated[dt.datetime, BeforeValidator(_date_time_text)]
# Enums of the schema, from the registry of cached kinds (cache.kinds).
if TYPE_CHECKING:
    WarmupKind = str
    Tag = str
    InvalidatedType = str
    Job = str
else:
    Job = Literal[JOBS]  # the maintenance reports' jobs (workers.routing)
    WarmupKind = Literal[WARMUPS]
    Tag = Literal[KINDS.tags]
    InvalidatedType = Literal[tuple(data_type.value for data_type in KINDS.data_types)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarmupRequest(_Body):
    kind: WarmupKind
    ids: Annotated[list[MemberId], Field(min_length=1, max_length=MAX_IDS)] | None = None

    @model_validator(mode="after")
    def _ids_go_with_members(self) -> Self:
        if (self.kind == "members") != (self.ids is not None):
            raise ValueError('ids go with kind "members", and only with it')
        return self


class BulkEvent(_Body):
    """A bulk operation that committed; with ``member_ids``, their records go too."""

    kind: Literal["import", "update", "delete"]
    affected_count: Annotated[int, Field(ge=0, le=10**9)]
    member_ids: Annotated[list[MemberId], Field(min_length=1, max_length=MAX_IDS)] | None = None

    @model_validator(mode="after")
    def _ids_go_with_members_touched(self) -> Self:
        if self.member_ids is not None and self.affected_count == 0:
            raise ValueError("member_ids go with an affected_count above 0")
        return self


class InvalidationRequest(_Body):
    """Exactly one of: member ids, tags, a data type, a bulk-operation event."""

    member_ids: Annotated[list[MemberId], Field(min_length=1, max_length=MAX_IDS)] | None = None
    tags: Annotated[list[Tag], Field(min_length=1, max_length=len(KINDS.tags))] | None = None
    data_type: InvalidatedType | None = None
    bulk: BulkEvent | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [self.member_ids, self.tags, self.data_type, self.bulk]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of member_ids, tags, data_type, bulk")
        return self


def valid_stream_id(value: str) -> bool:
    """<ms>-<seq>, both within the unsigned 64-bit range Redis allows."""
    if not re.match(STREAM_ID, value):
        return False
    ms, seq = value.split("-")
    return int(ms) <= MAX_U64 and int(seq) <= MAX_U64


class ReplayRequest(_Body):
    ids: Annotated[
        list[Annotated[str, Field(pattern=STREAM_ID)]],
        Field(min_length=1, max_length=MAX_DEAD_IDS),
    ]

    @field_validator("ids")
    @classmethod
    def _in_range(cls, ids: list[str]) -> list[str]:
        for value in ids:
            if not valid_stream_id(value):
                raise ValueError(f"not a stream id: {value!r}")
        return ids
