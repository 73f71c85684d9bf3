"""A warm-up racing a write on real PostgreSQL and Redis: the write commits after the warm-up
read the member's page and its invalidation deletes the key before the warm-up's SET NX (a
bulk update, an import, the outbox's replay after a failover). The old row must not stay
cached: the warm-up re-reads the versions of what it stored and retracts what was overtaken.
(Seen in the 1,000,000-member replay: two members cached a version behind for over 60 s.)"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, select, update

from cache import MISS, CacheService, DataType
from db.models import Member
from db.seed import SeedReport
from tasks import warming
from tasks.sources import MemberRow, SqlSource


class OvertakingSource(SqlSource):
    """The real source; right after the page holding ``member_id`` is read, a write commits to
    that member and its invalidation deletes the key."""

    def __init__(self, engine: Engine, cache: CacheService, member_id: int) -> None:
        super().__init__(engine)
        self.cache, self.member_id = cache, member_id

    def member_pages(
        self, size: int, *, after: int = 0, upto: int | None = None
    ) -> Iterator[list[MemberRow]]:
        for page in super().member_pages(size, after=after, upto=upto):
            if any(member_id == self.member_id for member_id, _, _ in page):
                with self.engine.begin() as connection:
                    connection.execute(
                        update(Member)
                        .where(Member.id == self.member_id)
                        .values(version=Member.version + 1)
                    )
                self.cache.delete(self.cache.keys.member(self.member_id))
            yield page


def _version(engine: Engine, member_id: int) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(Member.version).where(Member.id == member_id)))


def test_a_write_that_overtakes_the_warm_up_is_not_left_stale(
    pg_engine: Engine, seeded: SeedReport, cache: CacheService
) -> None:
    member_id = 150
    before = _version(pg_engine, member_id)
    source = OvertakingSource(pg_engine, cache, member_id)
    try:
        report = warming.warm_member_range(cache, source, 100, 200, batch_size=40)
        cached = cache.get(cache.keys.member(member_id), DataType.MEMBER)
        assert cached is MISS or cached["version"] == before + 1, cached
        assert report.done == report.written == 100
        assert report.retracted == 1
        # Its neighbours, read in the same page and not overtaken, stay cached.
        neighbours = cache.get_many(cache.keys.members([149, 151]), DataType.MEMBER)
        assert [m["version"] for m in neighbours] == [
            _version(pg_engine, 149),
            _version(pg_engine, 151),
        ]
    finally:
        with pg_engine.begin() as connection:
            connection.execute(update(Member).where(Member.id == member_id).values(version=before))
