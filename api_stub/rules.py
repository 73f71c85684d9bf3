"""What a cached route declares: the kind it serves (cache.kinds), and what its request varies on.

A GET endpoint opts in with :func:`cached`; api_stub.caching serves it. The kind's storage
decides the entry (cache/kinds.py):

- a *record* (``Storage.RECORD``): the JSON document under the kind's key for the route's
  path parameters (``Keys.member(id)``), shared with write-through and warm-up, versioned by
  its ``version`` field; a 404 is cached as NOT_FOUND, briefly.
- a *data entry* (``Storage.ENTRY``): the JSON document under the kind's key, which folds in
  the generations of its tags; the Celery warm-up fills the same key (``Kind.key``), so a
  warmed key is served as a hit: the route never runs.
- a *response* (``Storage.RESPONSE``): the body under ``Keys.http(digest)`` of method, path,
  sorted query, the Vary values and the generations of the kind's tags.

Tags, privacy and the data type (so the TTL) come from the kind's declaration, nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cache import Keys
from cache.kinds import KINDS, Kind, Storage
from cache.types import DataType

E = TypeVar("E", bound=Callable[..., Any])
# (keys, path parameters) -> the record's key
RecordKey = Callable[[Keys, Mapping[str, Any]], str]
# (keys, path parameters, generations of the kind's tags) -> the entry's key
EntryKey = Callable[[Keys, Mapping[str, Any], tuple[int, ...]], str]

RULE_ATTR: Final = "__cache_rule__"


@dataclass(frozen=True, slots=True)
class CacheRule:
    kind: Kind
    vary: tuple[bytes, ...]  # lower-case request header names
    record: RecordKey | None = None
    entry: EntryKey | None = None

    @property
    def data_type(self) -> DataType:
        return self.kind.data_type

    @property
    def tags(self) -> tuple[str, ...]:
        return self.kind.tags

    @property
    def private(self) -> bool:
        return self.kind.private

    @property
    def stores_body(self) -> bool:
        """A response entry keeps the body's bytes; records and data entries the document."""
        return self.record is None and self.entry is None


def rule_for(kind: Kind, vary: Sequence[str] = ()) -> CacheRule:
    """The caching rule of a route serving ``kind``."""
    if vary and kind.storage is not Storage.RESPONSE:
        raise ValueError(f"{kind.name}: records and data entries are shared keys: no Vary")
    record: RecordKey | None = None
    entry: EntryKey | None = None
    if kind.storage is Storage.RECORD:

        def record(keys: Keys, params: Mapping[str, Any]) -> str:
            return kind.key(keys, params)

    elif kind.storage is Storage.ENTRY:

        def entry(keys: Keys, params: Mapping[str, Any], gens: tuple[int, ...]) -> str:
            return kind.key(keys, params, gens)

    return CacheRule(
        kind=kind,
        vary=tuple(name.lower().encode("latin-1") for name in vary),
        record=record,
        entry=entry,
    )


def cached(kind: str | Kind, *, vary: Sequence[str] = ()) -> Callable[[E], E]:
    """Mark a GET endpoint as serving a cached kind (apply it below the route decorator).

    A record's or a data entry's route takes its key parts as path parameters named as the
    kind's ``params``, and no query string (the query is not part of a shared key). A record
    route answers 404 with the problem document of problems.NOT_FOUND, which is cached briefly.
    """
    rule = rule_for(KINDS[kind] if isinstance(kind, str) else kind, vary)

    def mark(endpoint: E) -> E:
        setattr(endpoint, RULE_ATTR, rule)
        return endpoint

    return mark


def rule_of(route: Any) -> CacheRule | None:
    rule = getattr(getattr(route, "endpoint", None), RULE_ATTR, None)
    return rule if isinstance(rule, CacheRule) else None
