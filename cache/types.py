"""Small shared vocabulary of the cache core: data types and sentinels."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class DataType(enum.StrEnum):
    """What a cached value is; it selects the TTL policy and labels the metrics."""

    ANALYTICS = "analytics"
    STATISTICS = "statistics"
    MEMBER = "member"
    LOOKUP = "lookup"
    DEFAULT = "default"


# The setting that holds each data type's TTL (config.Settings field; the variable is its
# upper-case name). TtlPolicy and the weekly TTL review read it from here.
TTL_SETTING: Final[Mapping[DataType, str]] = {
    DataType.ANALYTICS: "cache_analytics_ttl",
    DataType.STATISTICS: "cache_statistics_ttl",
    DataType.MEMBER: "cache_member_ttl",
    DataType.LOOKUP: "cache_lookup_ttl",
    DataType.DEFAULT: "redis_default_ttl",
}


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __bool__(self) -> bool:
        return False


# Nothing is cached for the key. Not None: None is a value that can be cached.
MISS: Final = _Sentinel("MISS")
# The source says the thing does not exist; cached briefly ("negative caching").
NOT_FOUND: Final = _Sentinel("NOT_FOUND")

Sentinel = _Sentinel
