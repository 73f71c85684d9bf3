"""What a cached route declares: its data type, and which kind of entry answers it.

A GET endpoint opts in with :func:`cached`; api_stub.caching serves it. Three kinds of entry:

- a *record* (``record=``): the JSON document itself under a key of the core
  (``Keys.member(id)``) shared with write-through and warm-up, versioned by its ``version``
  field; a 404 is cached as NOT_FOUND, briefly.
- a *data entry* (``entry=``): the JSON document under a key of the core that the Celery
  warm-up fills too (``Keys.analytics("dashboard", gen)``, ``Keys.lookup(name)``); the key
  folds in the generations of the data type's tags, so a bump retires it. A warmed key is
  served as a hit: the route never runs.
- a *response* (neither): the body under ``Keys.http(digest)`` of method, path, sorted query,
  the Vary values and the generations.

:data:`CONFIG` holds what differs per data type; TTLs come from the cache's TtlPolicy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cache import DataType, Keys
from cache.invalidation import TAG_ANALYTICS, TAG_MEMBERS, TAG_STATISTICS

E = TypeVar("E", bound=Callable[..., Any])
# (keys, path parameters) -> the record's key
RecordKey = Callable[[Keys, Mapping[str, Any]], str]
# (keys, path parameters, generations of the data type's tags) -> the entry's key
EntryKey = Callable[[Keys, Mapping[str, Any], tuple[int, ...]], str]


@dataclass(frozen=True, slots=True)
class TypeConfig:
    tags: tuple[str, ...] = ()  # generations folded into the keys of entries and responses
    private: bool = False  # Cache-Control private: a browser may keep it, a shared proxy not


CONFIG: Final[Mapping[DataType, TypeConfig]] = {
    DataType.ANALYTICS: TypeConfig(tags=(TAG_ANALYTICS,)),
    DataType.STATISTICS: TypeConfig(tags=(TAG_STATISTICS,)),
    # Member data is personal: never in a shared cache.
    DataType.MEMBER: TypeConfig(tags=(TAG_MEMBERS,), private=True),
    DataType.LOOKUP: TypeConfig(),  # lookup tables are not written through the API
}

RULE_ATTR: Final = "__cache_rule__"


@dataclass(frozen=True, slots=True)
class CacheRule:
    data_type: DataType
    tags: tuple[str, ...]
    vary: tuple[bytes, ...]  # lower-case request header names
    private: bool
    record: RecordKey | None = None
    entry: EntryKey | None = None

    @property
    def stores_body(self) -> bool:
        """A response entry keeps the body's bytes; records and data entries the document."""
        return self.record is None and self.entry is None


def cached(
    data_type: DataType,
    *,
    vary: Sequence[str] = (),
    record: RecordKey | None = None,
    entry: EntryKey | None = None,
) -> Callable[[E], E]:
    """Mark a GET endpoint as cached (apply it below the route decorator).

    ``record`` makes the entry a record under the key it returns for the route's path
    parameters; its routes answer 404 with FastAPI's default body, which is cached briefly.
    ``entry`` makes it a data entry under the key it returns for the path parameters and the
    generations; its route's query string is not part of the key, so it must take none.
    """
    if record is not None and entry is not None:
        raise ValueError("a route is cached as a record or as a data entry, not both")
    if vary and (record is not None or entry is not None):
        raise ValueError("records and data entries are shared keys: they cannot vary")
    config = CONFIG[data_type]
    rule = CacheRule(
        data_type=data_type,
        tags=() if record is not None else config.tags,
        vary=tuple(name.lower().encode("latin-1") for name in vary),
        private=config.private,
        record=record,
        entry=entry,
    )

    def mark(endpoint: E) -> E:
        setattr(endpoint, RULE_ATTR, rule)
        return endpoint

    return mark


def rule_of(route: Any) -> CacheRule | None:
    rule = getattr(getattr(route, "endpoint", None), RULE_ATTR, None)
    return rule if isinstance(rule, CacheRule) else None
