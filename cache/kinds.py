"""The registry of cached kinds: what each cached thing is, declared once.

A *kind* is one sort of cached value: a member record, the analytics dashboard, a lookup
table. Its declaration holds everything the platform must agree on::

    data_type        selects the TTL setting (cache.types.TTL_SETTING) and labels the metrics
    storage          RECORD: one source row, version-guarded, a 404 cached briefly
                     ENTRY: a document computed from many rows, under a key of the core
                     RESPONSE: an HTTP body under a digest of the request (list pages)
    path / params    the key: ``Keys.entry(data_type, *path, *params, *generations)``
    tags             generations folded into the key: a bump of a tag retires every entry
    private          Cache-Control private (personal data never sits in a shared cache)
    invalidated_by   which member changes retire it (its tags are bumped on them)
    lag              seconds a tagged value retired by a change may still be served (X-Cache:
                     STALE, with Age) while one recompute runs behind it; 0: the reader
                     after a change waits for the recompute. A request with Cache-Control
                     no-cache always waits; CACHE_MAX_LAG_SECONDS caps every kind's lag
                     (api_stub.lagging)
    kept_current     seconds after a variant's last read that the API keeps it current for
                     its readers (api_stub.keepcurrent): recomputed each half lag while
                     changes come, so a reader within that time never waits; 0: readers
                     recompute
    warm             how the Celery warm-up fills it (critical: every variant; hottest: the
                     hottest records in ``warmup critical``, every record in ``warmup all``)
    variants         the parameter values the warm-up fills (the lookup tables' names)
    query            the function of db/ that computes it, "<module>.<function>" under db
                     (called with a session and the variant's values)

Readers: the API's caching rules (api_stub.rules) and routes' keys, the warm-up
(tasks.warming), both invalidation paths (cache.invalidation for the API, tasks.invalidation
for Celery), the management API's enums and its /kinds listing, the TTL review, the task
client's warm-up kinds and the dashboard (through /api/v1/cache/kinds). The API and the
warm-up build a key with the same :meth:`Kind.key`, generations included; whatever needs the
current keys of a kind's variants (warm-up, invalidation, checks) takes :meth:`Kind.variant_keys`.

Adding a cached kind: a declaration below, its query in db/, its route in api_stub/routes.py.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cache.keys import Keys
from cache.types import DataType


class Storage(enum.StrEnum):
    RECORD = "record"
    ENTRY = "entry"
    RESPONSE = "response"


class Change(enum.StrEnum):
    """What happened to members, as the invalidation hooks name it."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    IMPORT = "import"
    BULK_UPDATE = "bulk_update"
    BULK_DELETE = "bulk_delete"


MEMBER_CHANGES: Final = frozenset(Change)  # anything computed from the members table


class Warm(enum.StrEnum):
    NONE = "none"  # filled on first read only
    CRITICAL = "critical"  # every variant, by ``warmup critical`` (and ``all``)
    HOTTEST = "hottest"  # records: the hottest by ``warmup critical``, all by ``warmup all``


# Tags: one generation counter each (Keys.generation). Kinds of one data type share a tag, so
# an operator can retire a whole data type with one bump.
TAG_ANALYTICS: Final = "analytics"
TAG_STATISTICS: Final = "statistics"
TAG_MEMBERS: Final = "members"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    data_type: DataType
    storage: Storage
    description: str
    path: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    private: bool = False
    invalidated_by: frozenset[Change] = frozenset()
    warm: Warm = Warm.NONE
    variants: tuple[tuple[Any, ...], ...] = ((),)
    query: str | None = None
    near: bool = True
    lag: float = 0.0
    kept_current: float = 0.0

    def __post_init__(self) -> None:
        if self.storage is Storage.RECORD and self.tags:
            raise ValueError(f"{self.name}: a record is kept fresh by write-through, not tags")
        if self.lag < 0 or (self.lag and not self.tags):
            raise ValueError(f"{self.name}: only a tagged kind lags its changes, by >= 0 s")
        if self.kept_current < 0 or (self.kept_current and not self.lag):
            raise ValueError(f"{self.name}: only a lagging kind is kept current, for >= 0 s")
        if self.warm is not Warm.NONE and self.query is None:
            raise ValueError(f"{self.name}: a warmed kind names its query")
        if self.warm is Warm.CRITICAL and any(len(v) != len(self.params) for v in self.variants):
            raise ValueError(f"{self.name}: every variant gives each of {self.params}")

    def key(
        self, keys: Keys, params: Mapping[str, Any] | Sequence[Any] = (), gens: Sequence[int] = ()
    ) -> str:
        """The entry's key: ``<prefix><data_type>:<path>:<params>:<generations>``.

        ``params`` by name (a route's path parameters) or in order (a variant); ``gens`` are
        the current generations of :attr:`tags`, in order (cache.invalidation.generations).
        """
        if isinstance(params, Mapping):
            values: Sequence[Any] = [params[name] for name in self.params]
        else:
            values = params
        if len(values) != len(self.params) or len(gens) != len(self.tags):
            raise ValueError(f"{self.name}: key takes {self.params} and {len(self.tags)} gens")
        return keys.entry(self.data_type, *self.path, *values, *gens)

    def variant_keys(
        self, keys: Keys, gens: Mapping[str, int] | Sequence[int] = ()
    ) -> dict[str, tuple[Any, ...]]:
        """The current key of each of :attr:`variants`, with its parameter values.

        ``gens`` as :meth:`key` takes them, or by tag (one generations read for many kinds).
        A variant that does not give every parameter (a record's: keyed by id) has no key.
        """
        if isinstance(gens, Mapping):
            gens = [gens[tag] for tag in self.tags]
        return {
            self.key(keys, params, gens): params
            for params in self.variants
            if len(params) == len(self.params)
        }

    def describe(self) -> dict[str, Any]:
        """JSON for the management API's /kinds and the dashboard."""
        return {
            "name": self.name,
            "data_type": self.data_type.value,
            "storage": self.storage.value,
            "description": self.description,
            "tags": list(self.tags),
            "private": self.private,
            "invalidated_by": sorted(change.value for change in self.invalidated_by),
            "warm": self.warm.value,
            "near": self.near,
            "lag": self.lag,
            "kept_current": self.kept_current,
        }


@dataclass(frozen=True)
class Registry:
    kinds: tuple[Kind, ...]
    _by_name: dict[str, Kind] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_name = {kind.name: kind for kind in self.kinds}
        if len(by_name) != len(self.kinds):
            raise ValueError("two kinds share a name")
        object.__setattr__(self, "_by_name", by_name)

    def __getitem__(self, name: str) -> Kind:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown cached kind {name!r}; known: {self.names}") from None

    def __iter__(self) -> Iterator[Kind]:
        return iter(self.kinds)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def data_types(self) -> tuple[DataType, ...]:
        """The data types of the declared kinds, in DataType order."""
        used = {kind.data_type for kind in self.kinds}
        return tuple(data_type for data_type in DataType if data_type in used)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(tag for kind in self.kinds for tag in kind.tags))

    def of_type(self, data_type: DataType) -> tuple[Kind, ...]:
        return tuple(kind for kind in self.kinds if kind.data_type is data_type)

    def tags_of_type(self, data_type: DataType) -> tuple[str, ...]:
        return tuple(dict.fromkeys(tag for kind in self.of_type(data_type) for tag in kind.tags))

    def invalidated_by(self, change: Change) -> tuple[Kind, ...]:
        return tuple(kind for kind in self.kinds if change in kind.invalidated_by)

    def tags_for(self, change: Change) -> tuple[str, ...]:
        """The tags to bump after ``change``: one INCR each retires every derived entry."""
        return tuple(
            dict.fromkeys(tag for kind in self.invalidated_by(change) for tag in kind.tags)
        )

    def warmed(self, warm: Warm, data_type: DataType | None = None) -> tuple[Kind, ...]:
        return tuple(
            kind
            for kind in self.kinds
            if kind.warm is warm and (data_type is None or kind.data_type is data_type)
        )

    @property
    def warmable_types(self) -> tuple[DataType, ...]:
        """Data types a ``warmup <data type>`` can fill."""
        return tuple(
            data_type
            for data_type in self.data_types
            if any(kind.warm is not Warm.NONE for kind in self.of_type(data_type))
        )


KINDS: Final = Registry(
    (
        Kind(
            "member",
            DataType.MEMBER,
            Storage.RECORD,
            "one member record, written through on every change",
            params=("member_id",),
            private=True,  # personal data: never in a shared cache
            invalidated_by=MEMBER_CHANGES,
            warm=Warm.HOTTEST,
            query="queries.members_by_ids",
        ),
        Kind(
            "member_list",
            DataType.MEMBER,
            Storage.RESPONSE,
            "pages of the member list, by filters",
            tags=(TAG_MEMBERS,),
            private=True,
            invalidated_by=MEMBER_CHANGES,
            lag=5.0,  # a page may show a change 5 s late (a browser's reload asks for now)
            # A page is an index scan (0.6 ms at 1,000,000 members), refreshed in one database
            # session with every other page due: at the replay's rate a list variant is read
            # every 2 to 12 s, and 20% of reads came after more than the lag, each a miss (7 ms
            # under load, p99 28 ms; bench.replay). Kept current for 30 s after a read.
            kept_current=30.0,
        ),
        Kind(
            "dashboard",
            DataType.ANALYTICS,
            Storage.ENTRY,
            "members by status and tier; joins, churn and revenue per month",
            path=("dashboard",),
            tags=(TAG_ANALYTICS,),
            invalidated_by=MEMBER_CHANGES,
            warm=Warm.CRITICAL,
            query="analytics.analytics_dashboard",
            # A report up to 30 s behind a write: each recompute scans the tables, 0.3 s at
            # 100,000 members and 5 to 10 s at 1,000,000 under load, and the lag must hold
            # twice that for readers never to wait (api_stub.lagging).
            lag=30.0,
        ),
        Kind(
            "growth",
            DataType.ANALYTICS,
            Storage.ENTRY,
            "members joined and members at the end of each month, per tier",
            path=("growth",),
            tags=(TAG_ANALYTICS,),
            invalidated_by=MEMBER_CHANGES,
            warm=Warm.CRITICAL,
            query="analytics.member_growth",
            lag=30.0,
        ),
        Kind(
            "demographics",
            DataType.STATISTICS,
            Storage.ENTRY,
            "members by age band, country and tier",
            path=("demographics",),
            tags=(TAG_STATISTICS,),
            invalidated_by=MEMBER_CHANGES,
            warm=Warm.CRITICAL,
            query="analytics.demographics",
            lag=30.0,
        ),
        Kind(
            "member_count",
            DataType.STATISTICS,
            Storage.ENTRY,
            "how many members match the member list's filters: its pages' total",
            path=("member_count",),
            params=("filters",),  # a digest of the filters (a prefix search is free text)
            tags=(TAG_STATISTICS,),
            invalidated_by=MEMBER_CHANGES,
            query="queries.count_members",
            # A count visits every matching index entry (26 ms for a tier of 1,000,000 members);
            # a page is 0.6 ms. The total lags like a report, so a page is recomputed cheaply.
            lag=30.0,
        ),
        Kind(
            "lookup",
            DataType.LOOKUP,
            Storage.ENTRY,
            "the tiers, statuses and countries tables",
            params=("name",),
            warm=Warm.CRITICAL,
            variants=(("tiers",), ("statuses",), ("countries",)),
            query="queries.lookup",
        ),
    )
)

# What ``warmup`` accepts (the task client, the management API, cachectl): the plans, then
# each data type with a warmed kind.
WARMUPS: Final = ("critical", "all", "members", *(t.value for t in KINDS.warmable_types))
