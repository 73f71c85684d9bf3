"""Where warm-ups read from: the :class:`Source` protocol and its database implementation.

The only module of tasks/ that touches the data layer. Values come from db.queries, so a
warmed key holds exactly what the API's read path would have stored for it.

The names cached per data type are fixed here, one place for warm-up and invalidation::

    lookup      tiers, statuses, countries        -> Keys.lookup(name)
    analytics   dashboard                         -> Keys.analytics(name)
    statistics  demographics                      -> Keys.statistics(name)
    member      every member, by id               -> Keys.member(id)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db import make_engine, queries, resolve_database_url, session_factory

LOOKUP_NAMES: Final = ("tiers", "statuses", "countries")
ANALYTICS_NAMES: Final = ("dashboard",)
STATISTICS_NAMES: Final = ("demographics",)

Member = dict[str, Any]


class Source(Protocol):
    """Read side of warm-ups. Every method is one query unless it says otherwise."""

    def lookup(self, name: str) -> Any: ...

    def analytics(self, name: str) -> Any: ...

    def statistics(self, name: str) -> Any: ...

    def hottest_member_ids(self, limit: int) -> list[int]: ...

    def count_members(self) -> int: ...

    def members(self, ids: Iterable[int]) -> dict[int, Member]:
        """The members among ``ids`` that exist, by id (one query per 5,000 ids)."""
        ...

    def member_pages(self, size: int) -> Iterator[list[Member]]:
        """Every member in id order, ``size`` at a time, one keyset query per page."""
        ...

    def close(self) -> None: ...


class SqlSource:
    """:class:`Source` over db/: one engine per worker process, one session per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions: sessionmaker[Session] = session_factory(engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlSource:
        return cls(make_engine(resolve_database_url(settings)))

    def lookup(self, name: str) -> Any:
        with self._sessions() as session:
            return queries.lookup(session, name)

    def analytics(self, name: str) -> Any:
        if name != "dashboard":
            raise ValueError(f"unknown analytics {name!r}")
        with self._sessions() as session:
            return queries.analytics_dashboard(session)

    def statistics(self, name: str) -> Any:
        if name != "demographics":
            raise ValueError(f"unknown statistics {name!r}")
        with self._sessions() as session:
            return queries.demographics(session)

    def hottest_member_ids(self, limit: int) -> list[int]:
        with self._sessions() as session:
            return queries.hottest_member_ids(session, limit)

    def count_members(self) -> int:
        with self._sessions() as session:
            return queries.count_members(session)

    def members(self, ids: Iterable[int]) -> dict[int, Member]:
        with self._sessions() as session:
            return queries.members_by_ids(session, ids)

    def member_pages(self, size: int) -> Iterator[list[Member]]:
        after = 0
        while True:
            with self._sessions() as session:  # one short transaction per page
                page = queries.members_after(session, after, size)
            if not page:
                return
            yield page
            after = page[-1]["id"]

    def close(self) -> None:
        self.engine.dispose()
