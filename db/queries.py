"""Member reads and writes, and lookups, as plain functions over a Session.

Every function returns JSON-ready values (see db.serialize) and raises only DataError
subclasses. Writes run in the caller's transaction and do not commit: use
``with factory.begin() as session:`` so a write and whatever the caller does with its result
(a cache write-through, say) commit or roll back together. After a DataError from a write the
transaction is unusable on PostgreSQL and must be rolled back.

The aggregates (dashboard, demographics, hottest members) live in db.analytics and are
re-exported here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, delete, func, insert, null, or_, select, update
from sqlalchemy.orm import Session

from db import serialize
from db.analytics import analytics_dashboard, demographics, hottest_member_ids
from db.errors import Conflict, InvalidData, UnknownLookup, translating
from db.models import Country, Member, MemberActivityDaily, Status, Tier

__all__ = [
    "MAX_PAGE_SIZE",
    "analytics_dashboard",
    "bulk_delete_members",
    "bulk_update_members",
    "count_members",
    "create_member",
    "delete_member",
    "demographics",
    "get_member",
    "hottest_member_ids",
    "import_members",
    "insert_members",
    "list_members",
    "lookup",
    "members_after",
    "members_by_ids",
    "taken_emails",
    "update_member",
]

MAX_PAGE_SIZE: Final = 500
BULK_FILTERS: Final = frozenset({"status", "tier", "country"})  # what a bulk change selects by
BULK_UPDATABLE: Final = frozenset({"status", "tier"})  # what it may set
IDS_PER_QUERY: Final = 5_000  # stays under SQLite's bound-parameter limit

# A member's last sighting: that of its newest day of activity, one backward step of the
# activity table's primary key (the write-behind flush keeps it there, db/writebehind.py).
LAST_SEEN_AT: Final = (
    select(MemberActivityDaily.last_seen_at)
    .where(
        MemberActivityDaily.member_id == Member.id,
        MemberActivityDaily.last_seen_at.is_not(None),
    )
    .order_by(MemberActivityDaily.day.desc())
    .limit(1)
    .correlate_except(MemberActivityDaily)  # also inside UPDATE ... RETURNING
    .scalar_subquery()
    .label("last_seen_at")
)

MEMBER_COLUMNS: Final = (
    Member.id,
    Member.email,
    Member.first_name,
    Member.last_name,
    Member.status,
    Member.tier,
    Member.country,
    Member.birth_date,
    Member.joined_at,
    Member.updated_at,
    LAST_SEEN_AT,
    Member.version,
)
# INSERT ... RETURNING: SQLAlchemy does not correlate a subquery with the inserted table (it
# would read every member's activity), and a new member has none.
NEW_MEMBER_COLUMNS: Final = tuple(
    null().label("last_seen_at") if column is LAST_SEEN_AT else column for column in MEMBER_COLUMNS
)
# id, version and updated_at belong to the database; last_seen_at to the write-behind flusher.
UPDATABLE: Final = frozenset(
    {"email", "first_name", "last_name", "status", "tier", "country", "birth_date"}
)
CREATABLE: Final = UPDATABLE | {"joined_at"}
REQUIRED: Final = ("email", "first_name", "last_name", "country")
DEFAULTS: Final[Mapping[str, object]] = {"status": "active", "tier": "bronze", "birth_date": None}


# --- Reads ----------------------------------------------------------------------------------


def get_member(session: Session, member_id: int) -> dict[str, Any] | None:
    """One member with its version, or None."""
    with translating():
        row = session.execute(select(*MEMBER_COLUMNS).where(Member.id == member_id))
        found = row.mappings().one_or_none()
    return None if found is None else serialize.member(found)


def members_by_ids(session: Session, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The members among ``ids`` that exist, keyed by id (missing ids are simply absent)."""
    wanted = sorted(set(ids))
    found: dict[int, dict[str, Any]] = {}
    with translating():
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            rows = session.execute(select(*MEMBER_COLUMNS).where(Member.id.in_(chunk)))
            for row in rows.mappings():
                found[row["id"]] = serialize.member(row)
    return found


def member_versions(session: Session, ids: Iterable[int]) -> dict[int, int]:
    """The current version of each member among ``ids`` that exists (primary-key lookups)."""
    wanted = sorted(set(ids))
    found: dict[int, int] = {}
    with translating():
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            rows = session.execute(select(Member.id, Member.version).where(Member.id.in_(chunk)))
            found.update((member_id, version) for member_id, version in rows)
    return found


def members_after(session: Session, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` members with ids above ``after_id``, in id order (keyset paging).

    Each page is one primary-key range scan however deep it is, unlike OFFSET.
    """
    with translating():
        rows = session.execute(
            select(*MEMBER_COLUMNS).where(Member.id > after_id).order_by(Member.id).limit(limit)
        )
        return [serialize.member(row) for row in rows.mappings()]


def member_id_bounds(session: Session) -> tuple[int, int] | None:
    """The lowest and highest member id (two primary-key lookups), None without members."""
    with translating():
        low, high = session.execute(select(func.min(Member.id), func.max(Member.id))).one()
    return None if low is None else (int(low), int(high))


def list_members(
    session: Session,
    *,
    status: str | None = None,
    tier: str | None = None,
    country: str | None = None,
    q: str | None = None,
    page: int = 1,
    page_size: int = 50,
    total: int | None = None,
) -> dict[str, Any]:
    """One page of members ordered by id, with the total matching the filters (``total``: a
    count the caller holds, e.g. the API's within its lag; else counted here). A held count
    is corrected by the page: the last page (not full, and not past the end) gives the exact
    count, and no page shows fewer than the rows up to it.

    ``q`` is a case-insensitive prefix of the email, the first name or the last name; "jane
    smi" also matches first name "Jane" with a last name starting "Smi".

    The page is an index scan in id order (0.6 ms at 1,000,000 members); the count visits
    every matching index entry (26 ms for one tier of 1,000,000 on an idle machine).
    """
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidData(f"page must be >= 1 and page_size within 1..{MAX_PAGE_SIZE}")
    filters = _list_filters(status, tier, country, q)
    with translating():
        rows = session.execute(
            select(*MEMBER_COLUMNS)
            .where(*filters)
            .order_by(Member.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        items = [serialize.member(row) for row in rows.mappings()]
        seen = (page - 1) * page_size + len(items)  # rows up to this page's last, counted now
        if total is None:
            total = _count(session, filters)
        elif len(items) < page_size and (items or page == 1):
            total = seen  # the last page: the rows read now are the exact count
        elif items:
            total = max(total, seen)  # a held count is never below what is on the page
        return {"items": items, "total": total, "page": page, "page_size": page_size}


def count_members(
    session: Session,
    *,
    status: str | None = None,
    tier: str | None = None,
    country: str | None = None,
    q: str | None = None,
) -> int:
    """How many members :func:`list_members` pages through with these filters (none: every
    member; PostgreSQL may use an index-only scan)."""
    with translating():
        return _count(session, _list_filters(status, tier, country, q))


def _count(session: Session, filters: list[ColumnElement[bool]]) -> int:
    counted = session.execute(select(func.count()).select_from(Member).where(*filters))
    return int(counted.scalar_one())


def _list_filters(
    status: str | None, tier: str | None, country: str | None, q: str | None
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if status is not None:
        filters.append(Member.status == status)
    if tier is not None:
        filters.append(Member.tier == tier)
    if country is not None:
        filters.append(Member.country == country.upper())
    if q is not None and q.strip():
        filters.append(_prefix_filter(q))
    return filters


def _filters(where: Mapping[str, str | None]) -> list[ColumnElement[bool]]:
    """Equality on status, tier and country (upper-cased), for the bulk writes."""
    unknown = set(where) - BULK_FILTERS
    if unknown:
        raise InvalidData(f"cannot select members by {sorted(unknown)}")
    filters: list[ColumnElement[bool]] = []
    for name, value in where.items():
        if value is not None:
            column = getattr(Member, name)
            filters.append(column == (value.upper() if name == "country" else value))
    if not filters:
        raise InvalidData("a bulk change names at least one of status, tier, country")
    return filters


def bulk_update_members(
    session: Session, where: Mapping[str, str | None], data: Mapping[str, Any]
) -> list[int]:
    """Change ``data`` (status, tier) of every member matching ``where``: one UPDATE that bumps
    each version and updated_at; the ids changed."""
    values = _clean(data, BULK_UPDATABLE)
    if not values:
        raise InvalidData(f"a bulk update sets at least one of {sorted(BULK_UPDATABLE)}")
    stmt = (
        update(Member)
        .where(*_filters(where))
        .values(**values, version=Member.version + 1, updated_at=dt.datetime.now(dt.UTC))
        .returning(Member.id)
    )
    with translating():
        return list(session.scalars(stmt, execution_options={"synchronize_session": False}))


def bulk_delete_members(session: Session, where: Mapping[str, str | None]) -> list[int]:
    """Delete every member matching ``where`` (payments and activity go with them); their ids."""
    stmt = delete(Member).where(*_filters(where)).returning(Member.id)
    with translating():
        return list(session.scalars(stmt, execution_options={"synchronize_session": False}))


def _prefix_filter(q: str) -> ColumnElement[bool]:
    text = " ".join(q.lower().split())
    # Escape LIKE's wildcards: a user's "_" or "%" is a character, not a pattern.
    pattern = _escape_like(text) + "%"
    options: list[ColumnElement[bool]] = [
        Member.email.like(pattern, escape="\\"),
        func.lower(Member.first_name).like(pattern, escape="\\"),
        func.lower(Member.last_name).like(pattern, escape="\\"),
    ]
    first, _, last = text.partition(" ")
    if last:
        options.append(
            and_(
                func.lower(Member.first_name) == first,
                func.lower(Member.last_name).like(_escape_like(last) + "%", escape="\\"),
            )
        )
    return or_(*options)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


LOOKUPS: Final = ("tiers", "statuses", "countries")


def lookup(session: Session, name: str) -> list[dict[str, Any]]:
    """The rows of one lookup table: "tiers" (by rank), "statuses" or "countries" (by name)."""
    with translating():
        if name == "tiers":
            tiers = session.execute(
                select(Tier.code, Tier.name, Tier.monthly_fee, Tier.rank).order_by(Tier.rank)
            )
            return [
                {"code": code, "name": label, "monthly_fee": serialize.money(fee), "rank": rank}
                for code, label, fee, rank in tiers
            ]
        if name == "statuses":
            statuses = session.execute(select(Status.code, Status.name).order_by(Status.code))
            return [{"code": code, "name": label} for code, label in statuses]
        if name == "countries":
            countries = session.execute(select(Country.code, Country.name).order_by(Country.name))
            return [{"code": code, "name": label} for code, label in countries]
    raise UnknownLookup(f"unknown lookup {name!r}; expected one of {', '.join(LOOKUPS)}")


# --- Writes ---------------------------------------------------------------------------------


def create_member(session: Session, data: Mapping[str, Any]) -> dict[str, Any]:
    """Insert one member (version 1) and return it; a taken email raises Conflict."""
    values = _new_member(data, dt.datetime.now(dt.UTC))
    with translating():
        row = session.execute(insert(Member).values(values).returning(*NEW_MEMBER_COLUMNS))
        return serialize.member(row.mappings().one())


def update_member(
    session: Session,
    member_id: int,
    data: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> dict[str, Any] | None:
    """Change the given fields, bump version and updated_at, and return the new row.

    None when the member does not exist. With ``expected_version``, a member at another
    version raises Conflict (optimistic locking). An empty ``data`` changes nothing and
    returns the current row.
    """
    values = _clean(data, UPDATABLE)
    with translating():
        if not values:
            current = get_member(session, member_id)
            _check_version(current, expected_version)
            return current
        stmt = update(Member).where(Member.id == member_id)
        if expected_version is not None:
            stmt = stmt.where(Member.version == expected_version)
        stmt = stmt.values(
            **values, version=Member.version + 1, updated_at=dt.datetime.now(dt.UTC)
        ).returning(*MEMBER_COLUMNS)
        row = (
            session.execute(stmt, execution_options={"synchronize_session": False})
            .mappings()
            .one_or_none()
        )
        if row is not None:
            return serialize.member(row)
        current = get_member(session, member_id)
        _check_version(current, expected_version)
        return None


def _check_version(current: Mapping[str, Any] | None, expected: int | None) -> None:
    if current is not None and expected is not None and current["version"] != expected:
        raise Conflict(f"member {current['id']} is at version {current['version']}, not {expected}")


def delete_member(session: Session, member_id: int) -> dict[str, Any] | None:
    """Delete a member (payments and activity go with it); its id and last version, or None."""
    with translating():
        row = session.execute(
            delete(Member).where(Member.id == member_id).returning(Member.id, Member.version),
            execution_options={"synchronize_session": False},
        ).one_or_none()
    return None if row is None else {"id": row.id, "version": row.version}


def import_members(session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert many members in one executemany statement; returns how many were inserted.

    All or nothing: one taken email raises Conflict and nothing of the batch remains.
    """
    now = dt.datetime.now(dt.UTC)
    values = [_new_member(row, now) for row in rows]
    if not values:
        return 0
    with translating():
        session.execute(insert(Member), values)
    return len(values)


def insert_members(session: Session, rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """Like import_members, but returns the new ids in the order of ``rows``.

    The cache needs them: it may hold a "not found" entry for an id that now exists.
    """
    now = dt.datetime.now(dt.UTC)
    values = [_new_member(row, now) for row in rows]
    if not values:
        return []
    stmt = insert(Member).returning(Member.id, sort_by_parameter_order=True)
    with translating():
        return list(session.scalars(stmt, values))


def taken_emails(session: Session, emails: Iterable[str]) -> set[str]:
    """The addresses among ``emails`` (compared lower-cased) that members already use."""
    wanted = sorted({email.strip().lower() for email in emails})
    taken: set[str] = set()
    with translating():
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            taken.update(session.scalars(select(Member.email).where(Member.email.in_(chunk))))
    return taken


def _new_member(data: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    values = {**DEFAULTS, **_clean(data, CREATABLE)}
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        raise InvalidData(f"missing required field(s): {', '.join(missing)}")
    values.setdefault("joined_at", now)
    values["updated_at"] = now
    values["version"] = 1
    return values


def _clean(data: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidData(f"field(s) not writable: {', '.join(unknown)}")
    values = dict(data)
    try:
        if "email" in values:
            email = str(values["email"]).strip().lower()
            if "@" not in email.strip("@"):
                raise ValueError(f"email: not an address: {values['email']!r}")
            values["email"] = email
        if "country" in values and isinstance(values["country"], str):
            values["country"] = values["country"].upper()
        if "birth_date" in values:
            values["birth_date"] = serialize.parse_date(values["birth_date"], "birth_date")
        if "joined_at" in values:
            values["joined_at"] = serialize.parse_datetime(values["joined_at"], "joined_at")
            if values["joined_at"] is None:
                del values["joined_at"]
    except ValueError as exc:
        raise InvalidData(str(exc)) from exc
    return values
