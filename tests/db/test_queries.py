"""Each query on a small known data set (the seeded rows are deleted inside the test's
transaction, which is rolled back afterwards)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from db import (
    Conflict,
    InvalidData,
    UnknownLookup,
    analytics_dashboard,
    count_members,
    create_member,
    delete_member,
    demographics,
    get_member,
    hottest_member_ids,
    import_members,
    list_members,
    lookup,
    members_after,
    members_by_ids,
    update_member,
)
from db.analytics import member_growth
from db.models import Member, MemberActivityDaily, Payment

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# email, first, last, status, tier, country, birth date, joined, last update (churn)
PEOPLE = {
    "alice": ("alice@example.com", "Alice", "Anders", "active", "gold", "US", "1990-01-01",
              "2025-05-10", None),
    "bob": ("bob@example.com", "Bob", "Brown", "lapsed", "bronze", "GB", "2000-06-16",
            "2024-01-20", "2024-03-15"),
    "carol": ("carol@example.com", "Carol", "Clark", "cancelled", "platinum", "DE", "1950-03-01",
              "2020-01-01", "2025-06-01"),
    "dave": ("dave_x@example.com", "Dave", "Davis", "suspended", "silver", "US", None,
             "2025-06-02", None),
}  # fmt: skip
PAYMENTS = (
    ("alice", "39.99", "2025-05-10", "dues"),
    ("alice", "39.99", "2025-06-10", "dues"),
    ("alice", "25.00", "2025-06-11", "event"),
    ("bob", "9.99", "2024-02-01", "dues"),
    ("bob", "9.99", "2023-01-01", "dues"),  # before the 24-month window
    ("carol", "120.00", "2025-06-01", "event"),
)


@pytest.fixture
def known(session: Session) -> dict[str, int]:
    """Replace the seeded members by four known ones; their ids by first name."""
    for model in (MemberActivityDaily, Payment, Member):
        session.execute(delete(model))
    ids: dict[str, int] = {}
    for key, (email, first, last, status, tier, country, born, joined, changed) in PEOPLE.items():
        row = create_member(
            session,
            {"email": email, "first_name": first, "last_name": last, "status": status,
             "tier": tier, "country": country, "birth_date": born, "joined_at": joined},
        )  # fmt: skip
        ids[key] = row["id"]
        session.execute(
            update(Member).where(Member.id == row["id"]).values(updated_at=at(changed or joined))
        )
    session.execute(
        insert(Payment),
        [
            {"member_id": ids[who], "amount": amount, "paid_at": at(day), "kind": kind}
            for who, amount, day, kind in PAYMENTS
        ],
    )
    return ids


def test_get_member_shape(known: dict[str, int], session: Session) -> None:
    member = get_member(session, known["alice"])
    assert member == {
        "id": known["alice"],
        "email": "alice@example.com",
        "first_name": "Alice",
        "last_name": "Anders",
        "status": "active",
        "tier": "gold",
        "country": "US",
        "birth_date": "1990-01-01",
        "joined_at": "2025-05-10T00:00:00+00:00",
        "updated_at": "2025-05-10T00:00:00+00:00",
        "last_seen_at": None,
        "version": 1,
    }
    json.dumps(member)
    assert get_member(session, 10**12) is None


def test_last_seen_at_is_the_members_own_newest_day(
    known: dict[str, int], session: Session
) -> None:
    """From the member's newest day of activity, in reads and in what writes return; never
    another member's (a subquery left uncorrelated in INSERT/UPDATE ... RETURNING would be)."""
    alice = known["alice"]
    days = ((1, "2025-06-01T09:00"), (2, "2025-06-02T08:00"))
    session.execute(
        insert(MemberActivityDaily),
        [{"member_id": alice, "day": dt.date(2025, 6, d), "last_seen_at": at(t)} for d, t in days],
    )
    newest = "2025-06-02T08:00:00+00:00"
    assert get_member(session, alice)["last_seen_at"] == newest  # type: ignore[index]
    assert members_by_ids(session, [alice])[alice]["last_seen_at"] == newest
    assert update_member(session, alice, {"first_name": "Alicia"})["last_seen_at"] == newest
    assert update_member(session, known["bob"], {"first_name": "Robert"})["last_seen_at"] is None
    created = create_member(
        session, {"email": "new@example.com", "first_name": "N", "last_name": "M", "country": "US"}
    )
    assert created["last_seen_at"] is None


def test_members_after_pages_by_id(known: dict[str, int], session: Session) -> None:
    ids = sorted(known.values())
    assert [m["id"] for m in members_after(session, 0, 3)] == ids[:3]
    assert [m["id"] for m in members_after(session, ids[2], 3)] == ids[3:]
    assert members_after(session, ids[-1], 3) == []
    assert count_members(session) == 4


def test_members_by_ids_skips_missing(known: dict[str, int], session: Session) -> None:
    found = members_by_ids(session, [known["bob"], known["carol"], 10**12, known["bob"]])
    assert sorted(found) == sorted([known["bob"], known["carol"]])
    assert found[known["bob"]]["email"] == "bob@example.com"
    assert members_by_ids(session, []) == {}


def emails(page: dict[str, Any]) -> list[str]:
    return [item["email"] for item in page["items"]]


def test_list_members_filters_and_pages(known: dict[str, int], session: Session) -> None:
    everyone = list_members(session)
    assert (everyone["total"], everyone["page"], everyone["page_size"]) == (4, 1, 50)
    assert emails(everyone) == [p[0] for p in PEOPLE.values()]  # ordered by id
    in_us = list_members(session, country="us")
    assert emails(in_us) == ["alice@example.com", "dave_x@example.com"]
    assert emails(list_members(session, status="lapsed")) == ["bob@example.com"]
    assert emails(list_members(session, tier="gold", country="DE")) == []
    second = list_members(session, page=2, page_size=1)
    assert (second["total"], emails(second)) == (4, ["bob@example.com"])
    assert list_members(session, page=9)["items"] == []
    with pytest.raises(InvalidData):
        list_members(session, page_size=0)


def test_a_held_total_is_corrected_by_the_page_read_now(
    known: dict[str, int], session: Session
) -> None:
    assert count_members(session, country="us") == 2 and count_members(session) == 4
    # The last page (not full) gives the exact count, whatever total was held.
    assert list_members(session, country="us", total=7)["total"] == 2
    assert list_members(session, status="lapsed", total=0)["total"] == 1
    assert list_members(session, tier="gold", country="DE", total=3)["total"] == 0
    # A full page: the held total stands, but never below the rows up to that page.
    assert list_members(session, page=2, page_size=1, total=9)["total"] == 9
    assert list_members(session, page=3, page_size=1, total=1)["total"] == 3
    # Past the end nothing is read to count by: the held total stands.
    assert list_members(session, page=9, total=4)["total"] == 4


def test_list_members_prefix_search(known: dict[str, int], session: Session) -> None:
    assert emails(list_members(session, q="ALI")) == ["alice@example.com"]  # email
    assert emails(list_members(session, q="brow")) == ["bob@example.com"]  # last name
    assert emails(list_members(session, q="Car")) == ["carol@example.com"]  # first name
    assert emails(list_members(session, q="carol  cl")) == ["carol@example.com"]  # full name
    assert emails(list_members(session, q="dave_")) == ["dave_x@example.com"]
    # LIKE wildcards typed by a user are literal characters.
    assert emails(list_members(session, q="d%")) == []
    assert emails(list_members(session, q="_ave")) == []


def test_lookups(session: Session) -> None:
    tiers = lookup(session, "tiers")
    assert [t["code"] for t in tiers] == ["bronze", "silver", "gold", "platinum"]
    assert tiers[0] == {"code": "bronze", "name": "Bronze", "monthly_fee": "9.99", "rank": 1}
    assert {s["code"] for s in lookup(session, "statuses")} == {
        "active", "lapsed", "suspended", "cancelled"
    }  # fmt: skip
    countries = lookup(session, "countries")
    assert len(countries) >= 30
    assert [c["name"] for c in countries] == sorted(c["name"] for c in countries)
    with pytest.raises(UnknownLookup, match="members"):
        lookup(session, "members")


def test_analytics_dashboard(known: dict[str, int], session: Session) -> None:
    board = analytics_dashboard(session, now=NOW)
    json.dumps(board)
    assert board["window"] == {"from": "2023-07", "to": "2025-06", "months": 24}
    assert board["members"] == {
        "total": 4,
        "by_status": {"active": 1, "cancelled": 1, "lapsed": 1, "suspended": 1},
        "by_tier": {"bronze": 1, "silver": 1, "gold": 1, "platinum": 1},
    }
    joins = {row["month"]: row["joins"] for row in board["joins_per_month"]}
    assert len(joins) == 24 and sum(joins.values()) == 3  # carol joined before the window
    assert (joins["2024-01"], joins["2025-05"], joins["2025-06"]) == (1, 1, 1)
    churn = {row["month"]: row for row in board["churn_per_month"]}
    assert churn["2024-03"] == {"month": "2024-03", "cancelled": 0, "lapsed": 1, "total": 1}
    assert churn["2025-06"] == {"month": "2025-06", "cancelled": 1, "lapsed": 0, "total": 1}
    assert sum(row["total"] for row in churn.values()) == 2
    revenue = {row["month"]: row for row in board["revenue_per_month"]}
    assert revenue["2025-06"] == {
        "month": "2025-06", "dues": "39.99", "event": "145.00", "total": "184.99"
    }  # fmt: skip
    assert revenue["2024-02"]["total"] == "9.99"
    assert revenue["2023-07"] == {
        "month": "2023-07", "dues": "0.00", "event": "0.00", "total": "0.00"
    }  # fmt: skip
    assert board["revenue_by_tier"] == [
        {"tier": "bronze", "total": "9.99", "payments": 1},
        {"tier": "silver", "total": "0.00", "payments": 0},
        {"tier": "gold", "total": "104.98", "payments": 3},
        {"tier": "platinum", "total": "120.00", "payments": 1},
    ]


def test_member_growth(known: dict[str, int], session: Session) -> None:
    growth = member_growth(session, now=NOW)
    json.dumps(growth)
    assert growth["window"] == {"from": "2024-07", "to": "2025-06", "months": 12}
    assert [row["tier"] for row in growth["tiers"]] == ["bronze", "silver", "gold", "platinum"]
    months = {row["tier"]: row["months"] for row in growth["tiers"]}
    assert all(len(rows) == 12 for rows in months.values())
    # Two of the four joined inside the window (2025-05 and 2025-06), two before it.
    assert sum(row["joined"] for rows in months.values() for row in rows) == 2
    assert sum(rows[0]["members"] - rows[0]["joined"] for rows in months.values()) == 2
    assert sum(rows[-1]["members"] for rows in months.values()) == 4
    for rows in months.values():  # month-end counts never go down, and add each month's joins
        for before, after in itertools.pairwise(rows):
            assert after["members"] == before["members"] + after["joined"]


def test_demographics(known: dict[str, int], session: Session) -> None:
    stats = demographics(session, today=NOW.date())
    json.dumps(stats)
    assert stats["total"] == 4
    bands = {row["band"]: row["members"] for row in stats["age_bands"]}
    # Bob turns 25 tomorrow; Carol turned 75 in March.
    assert bands == {
        "under 18": 0, "18-24": 1, "25-34": 0, "35-44": 1, "45-54": 0, "55-64": 0,
        "65-74": 0, "75+": 1, "unknown": 1,
    }  # fmt: skip
    assert [(c["code"], c["members"], c["share"]) for c in stats["countries"]] == [
        ("US", 2, 0.5), ("DE", 1, 0.25), ("GB", 1, 0.25)
    ]  # fmt: skip
    assert stats["countries"][0]["name"] == "United States"
    assert [(t["code"], t["members"]) for t in stats["tiers"]] == [
        ("bronze", 1), ("silver", 1), ("gold", 1), ("platinum", 1)
    ]  # fmt: skip


def test_hottest_member_ids(known: dict[str, int], session: Session) -> None:
    # Bob's payments are older than a year; Alice has three, Carol one.
    assert hottest_member_ids(session, 10, now=NOW) == [known["alice"], known["carol"]]
    assert hottest_member_ids(session, 1, now=NOW) == [known["alice"]]
    over_three_years = hottest_member_ids(session, 10, days=3 * 365, now=NOW)
    assert over_three_years == [known["alice"], known["bob"], known["carol"]]


def test_create_member_defaults_and_normalises(session: Session) -> None:
    member = create_member(
        session, {"email": " New.Person@Example.COM ", "first_name": "New", "last_name": "P",
                  "country": "fr"},
    )  # fmt: skip
    assert member["email"] == "new.person@example.com"
    assert (member["status"], member["tier"], member["country"]) == ("active", "bronze", "FR")
    assert member["version"] == 1 and member["joined_at"].endswith("+00:00")
    assert get_member(session, member["id"]) == member


def test_create_member_rejects_bad_input(session: Session) -> None:
    with pytest.raises(InvalidData, match="first_name"):
        create_member(session, {"email": "x@example.com", "last_name": "X", "country": "US"})
    with pytest.raises(InvalidData, match="id"):
        create_member(session, {"id": 5, "email": "x@example.com"})
    with pytest.raises(InvalidData, match="birth_date"):
        create_member(session, {"email": "x@example.com", "first_name": "X", "last_name": "X",
                                "country": "US", "birth_date": "yesterday"})  # fmt: skip
    with pytest.raises(InvalidData), session.begin_nested():  # foreign key
        create_member(session, {"email": "x@example.com", "first_name": "X", "last_name": "X",
                                "country": "US", "tier": "diamond"})  # fmt: skip


def test_duplicate_email_is_a_conflict(known: dict[str, int], session: Session) -> None:
    with pytest.raises(Conflict), session.begin_nested():
        create_member(session, {"email": "ALICE@example.com", "first_name": "A",
                                "last_name": "B", "country": "US"})  # fmt: skip
    with pytest.raises(Conflict), session.begin_nested():
        update_member(session, known["bob"], {"email": "alice@example.com"})
    assert get_member(session, known["bob"])["email"] == "bob@example.com"  # type: ignore[index]


def test_update_bumps_version_and_updated_at(known: dict[str, int], session: Session) -> None:
    before = get_member(session, known["alice"])
    assert before is not None
    after = update_member(session, known["alice"], {"tier": "platinum"})
    assert after is not None
    assert after["version"] == before["version"] + 1 == 2
    assert after["updated_at"] > before["updated_at"]
    unchanged = {k: v for k, v in after.items() if k not in ("tier", "version", "updated_at")}
    assert unchanged == {k: v for k, v in before.items() if k in unchanged}
    assert after["tier"] == "platinum"
    again = update_member(session, known["alice"], {"first_name": "Alicia"}, expected_version=2)
    assert again is not None and again["version"] == 3 and again["tier"] == "platinum"
    assert get_member(session, known["alice"]) == again


def test_update_with_stale_version_conflicts(known: dict[str, int], session: Session) -> None:
    with pytest.raises(Conflict, match="version 1, not 7"):
        update_member(session, known["bob"], {"tier": "gold"}, expected_version=7)
    assert get_member(session, known["bob"])["tier"] == "bronze"  # type: ignore[index]


def test_update_edge_cases(known: dict[str, int], session: Session) -> None:
    assert update_member(session, 10**12, {"tier": "gold"}) is None
    assert update_member(session, 10**12, {"tier": "gold"}, expected_version=1) is None
    same = update_member(session, known["bob"], {})
    assert same is not None and same["version"] == 1  # nothing changed, nothing bumped
    with pytest.raises(InvalidData, match="version"):
        update_member(session, known["bob"], {"version": 9})


def test_delete_member(known: dict[str, int], session: Session) -> None:
    update_member(session, known["alice"], {"tier": "silver"})
    assert delete_member(session, known["alice"]) == {"id": known["alice"], "version": 2}
    assert get_member(session, known["alice"]) is None
    assert delete_member(session, known["alice"]) is None
    assert hottest_member_ids(session, 10, now=NOW) == [known["carol"]]  # payments cascaded


def test_import_members(known: dict[str, int], session: Session) -> None:
    rows = [
        {"email": f"Import{i}@Example.com", "first_name": f"I{i}", "last_name": "Mport",
         "country": "NL", "birth_date": dt.date(1980, 1, 1 + i)}
        for i in range(3)
    ]  # fmt: skip
    assert import_members(session, rows) == 3
    page = list_members(session, q="import")
    assert page["total"] == 3
    assert {m["email"] for m in page["items"]} == {f"import{i}@example.com" for i in range(3)}
    assert import_members(session, []) == 0


def test_import_is_all_or_nothing(known: dict[str, int], session: Session) -> None:
    rows = [
        {"email": "fresh@example.com", "first_name": "F", "last_name": "R", "country": "US"},
        {"email": "bob@example.com", "first_name": "B", "last_name": "B", "country": "US"},
    ]
    with pytest.raises(Conflict), session.begin_nested():
        import_members(session, rows)
    assert list_members(session, q="fresh")["total"] == 0
