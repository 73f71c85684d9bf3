from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from db import create_member
from db.demo_data import COUNTRIES, STATUSES, TIERS
from db.models import Member, Payment
from db.seed import SeedReport, seed
from tests.db.conftest import SEED_MEMBERS, SEED_NOW


def scalar(session: Session, sql: str) -> int:
    return int(session.execute(text(sql)).scalar_one())


def test_report_and_counts(seeded: SeedReport, session: Session) -> None:
    assert seeded.dialect == "postgresql"
    assert seeded.members == SEED_MEMBERS == scalar(session, "SELECT count(*) FROM members")
    assert seeded.payments == scalar(session, "SELECT count(*) FROM payments")
    assert 2.5 * SEED_MEMBERS < seeded.payments < 3.5 * SEED_MEMBERS
    assert scalar(session, "SELECT count(*) FROM tiers") == len(TIERS) == 4
    assert scalar(session, "SELECT count(*) FROM statuses") == len(STATUSES) == 4
    assert scalar(session, "SELECT count(*) FROM countries") == len(COUNTRIES) >= 30


def test_emails_are_unique_and_plausible(session: Session) -> None:
    emails = list(session.scalars(select(Member.email)))
    assert len(set(emails)) == len(emails)
    assert all(e == e.lower() and "@" in e and " " not in e for e in emails)


def test_every_reference_resolves(session: Session) -> None:
    for column, table in (("status", "statuses"), ("tier", "tiers"), ("country", "countries")):
        orphans = scalar(
            session,
            f"SELECT count(*) FROM members m LEFT JOIN {table} t ON t.code = m.{column}"
            " WHERE t.code IS NULL",
        )
        assert orphans == 0, column
    assert scalar(session, "SELECT count(DISTINCT status) FROM members") == 4
    assert scalar(session, "SELECT count(DISTINCT tier) FROM members") == 4
    assert (
        scalar(
            session,
            "SELECT count(*) FROM payments p LEFT JOIN members m ON m.id = p.member_id"
            " WHERE m.id IS NULL",
        )
        == 0
    )


def test_values_fall_in_their_ranges(session: Session) -> None:
    oldest, youngest = session.execute(
        select(func.min(Member.birth_date), func.max(Member.birth_date))
    ).one()
    assert oldest is not None and youngest is not None
    assert oldest >= dt.date(1940, 1, 1) and youngest <= dt.date(2008, 12, 31)
    joined = session.execute(select(func.min(Member.joined_at), func.max(Member.joined_at))).one()
    assert joined[0] >= SEED_NOW - dt.timedelta(days=6 * 365) and joined[1] <= SEED_NOW
    assert session.scalar(select(func.count()).where(Member.updated_at < Member.joined_at)) == 0
    early = select(func.count()).select_from(Payment).join(Member, Member.id == Payment.member_id)
    assert session.scalar(early.where(Payment.paid_at < Member.joined_at)) == 0
    kinds = set(session.scalars(select(Payment.kind).distinct()))
    assert kinds == {"dues", "event"}


def test_indexes_and_foreign_keys_are_back_after_the_load(session: Session) -> None:
    indexes = set(
        session.scalars(
            text("SELECT indexname FROM pg_indexes WHERE tablename IN ('members', 'payments')")
        )
    )
    assert {"ux_members_email", "ix_members_country", "ix_payments_member_id"} <= indexes
    assert len(indexes) == 9  # two primary keys, six on members, one on payments
    fks = scalar(
        session,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        " AND conrelid IN ('members'::regclass, 'payments'::regclass)",
    )
    assert fks == 4


def test_identity_continues_after_the_seeded_ids(session: Session) -> None:
    member = create_member(
        session, {"email": "new@example.com", "first_name": "N", "last_name": "W", "country": "US"}
    )
    # Sequences are not transactional, so other tests may have drawn ids since the seed.
    assert member["id"] > SEED_MEMBERS


def test_reseeding_is_repeatable(pg_engine: Engine, seeded: SeedReport) -> None:
    # No `session` fixture here: its open transaction would block the TRUNCATE.
    first_five = select(Member.email).order_by(Member.id).limit(5)
    with Session(pg_engine) as before:
        first = before.scalars(first_five).all()
    again = seed(pg_engine, SEED_MEMBERS, progress=False, now=SEED_NOW)
    assert (again.members, again.payments) == (seeded.members, seeded.payments)
    with Session(pg_engine) as after:
        assert after.scalars(first_five).all() == first
