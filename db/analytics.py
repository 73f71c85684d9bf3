"""Aggregates over the whole membership: the dashboard, demographics, the hottest members.

These are full scans and hash aggregations on purpose. They stand for the expensive reports
the cache exists to shield, so nothing here reads precomputed tables. Each function scans
each table at most once by grouping on every dimension it reports and summing in Python
(the groups number in the hundreds at most).

Months are calendar months in UTC ("2024-05"); the dashboard window is the current month and
the 23 before it, and months without rows are reported with zeros.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal
from itertools import pairwise
from typing import Any, Final

from sqlalchemy import ColumnElement, case, func, literal_column, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from db import serialize
from db.demo_data import CHURNED_STATUSES
from db.errors import translating
from db.models import Country, Member, Payment, Status, Tier

DASHBOARD_MONTHS: Final = 24
# (label, lowest age) from the youngest band up; "unknown" covers a missing birth date.
AGE_BANDS: Final = (
    ("under 18", 0),
    ("18-24", 18),
    ("25-34", 25),
    ("35-44", 35),
    ("45-54", 45),
    ("55-64", 55),
    ("65-74", 65),
    ("75+", 75),
)


def analytics_dashboard(session: Session, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Members by status and tier, and per month: joins, churn and revenue (by kind, by tier).

    Churn counts members now lapsed or cancelled in the month of their last update: the
    schema keeps no status history, and leaving is the last thing a churned member does.
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    months = _months(now, DASHBOARD_MONTHS)
    start = dt.datetime(int(months[0][:4]), int(months[0][5:]), 1, tzinfo=dt.UTC)
    with translating():
        status_codes = list(session.scalars(select(Status.code).order_by(Status.code)))
        tier_codes = list(session.scalars(select(Tier.code).order_by(Tier.rank)))
        by_status: Counter[str] = Counter(dict.fromkeys(status_codes, 0))
        by_tier: Counter[str] = Counter(dict.fromkeys(tier_codes, 0))
        totals = session.execute(
            select(Member.status, Member.tier, func.count()).group_by(Member.status, Member.tier)
        )
        for status, tier, count in totals:
            by_status[status] += count
            by_tier[tier] += count

        joined = _month(session, Member.joined_at)
        joins = {
            month: count
            for month, count in session.execute(
                select(joined, func.count()).where(Member.joined_at >= start).group_by(joined)
            )
        }

        left = _month(session, Member.updated_at)
        churn: dict[str, Counter[str]] = defaultdict(Counter)
        churned = session.execute(
            select(left, Member.status, func.count())
            .where(Member.status.in_(sorted(CHURNED_STATUSES)), Member.updated_at >= start)
            .group_by(left, Member.status)
        )
        for month, status, count in churned:
            churn[month][status] += count

        paid = _month(session, Payment.paid_at)
        revenue: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        tier_revenue: dict[str, Decimal] = dict.fromkeys(tier_codes, Decimal(0))
        tier_payments: Counter[str] = Counter(dict.fromkeys(tier_codes, 0))
        payments = session.execute(
            select(paid, Payment.kind, Member.tier, func.sum(Payment.amount), func.count())
            .join(Member, Member.id == Payment.member_id)
            .where(Payment.paid_at >= start)
            .group_by(paid, Payment.kind, Member.tier)
        )
        for month, kind, tier, amount, count in payments:
            total = _decimal(amount)
            revenue[month][kind] += total
            tier_revenue[tier] = tier_revenue.get(tier, Decimal(0)) + total
            tier_payments[tier] += count

    churn_kinds = sorted(CHURNED_STATUSES)
    return {
        "generated_at": serialize.iso_datetime(now),
        "window": {"from": months[0], "to": months[-1], "months": len(months)},
        "members": {
            "total": sum(by_status.values()),
            "by_status": dict(by_status),
            "by_tier": dict(by_tier),
        },
        "joins_per_month": [{"month": m, "joins": joins.get(m, 0)} for m in months],
        "churn_per_month": [
            {"month": m, **{k: churn[m][k] for k in churn_kinds}, "total": sum(churn[m].values())}
            for m in months
        ],
        "revenue_per_month": [
            {
                "month": m,
                "dues": serialize.money(revenue[m]["dues"]),
                "event": serialize.money(revenue[m]["event"]),
                "total": serialize.money(sum(revenue[m].values(), Decimal(0))),
            }
            for m in months
        ],
        "revenue_by_tier": [
            {"tier": t, "total": serialize.money(tier_revenue[t]), "payments": tier_payments[t]}
            for t in tier_revenue
        ],
    }


def demographics(session: Session, *, today: dt.date | None = None) -> dict[str, Any]:
    """Members by age band, by country and by tier, with counts and shares of the total."""
    today = today or dt.datetime.now(dt.UTC).date()
    # Age >= N exactly when born on or before today N years ago: compare dates, so the
    # same SQL runs on PostgreSQL and SQLite without date arithmetic.
    band = case(
        (Member.birth_date.is_(None), "unknown"),
        *[
            (Member.birth_date > _years_before(today, next_low), label)
            for (label, _low), (_next, next_low) in pairwise(AGE_BANDS)
        ],
        else_=AGE_BANDS[-1][0],
    ).label("band")
    inner = select(band, Member.country, Member.tier).subquery()
    bands: Counter[str] = Counter(dict.fromkeys([label for label, _ in AGE_BANDS], 0))
    countries: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    with translating():
        rows = session.execute(
            select(inner.c.band, inner.c.country, inner.c.tier, func.count()).group_by(
                inner.c.band, inner.c.country, inner.c.tier
            )
        )
        for label, country, tier, count in rows:
            bands[label] += count
            countries[country] += count
            tiers[tier] += count
        country_names = {
            code: name for code, name in session.execute(select(Country.code, Country.name))
        }
        tier_rows = session.execute(select(Tier.code, Tier.name).order_by(Tier.rank)).all()
    total = sum(bands.values())

    def share(count: int) -> float:
        return round(count / total, 4) if total else 0.0

    band_order = [label for label, _ in AGE_BANDS] + (["unknown"] if bands["unknown"] else [])
    return {
        "total": total,
        "as_of": today.isoformat(),
        "age_bands": [
            {"band": b, "members": bands[b], "share": share(bands[b])} for b in band_order
        ],
        "countries": [
            {"code": c, "name": country_names.get(c, c), "members": n, "share": share(n)}
            for c, n in sorted(countries.items(), key=lambda item: (-item[1], item[0]))
        ],
        "tiers": [
            {"code": code, "name": name, "members": tiers[code], "share": share(tiers[code])}
            for code, name in tier_rows
        ],
    }


GROWTH_MONTHS: Final = 12


def member_growth(session: Session, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Per tier and calendar month of the last year: members who joined, and members at the
    month's end (those who joined by then and are still on the books).

    Members who left are not kept by the schema, so the month-end count is of today's members:
    it shows how the current membership was built up, tier by tier.
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    months = _months(now, GROWTH_MONTHS)
    start = dt.datetime(int(months[0][:4]), int(months[0][5:]), 1, tzinfo=dt.UTC)
    joined = _month(session, Member.joined_at)
    with translating():
        tier_codes = list(session.scalars(select(Tier.code).order_by(Tier.rank)))
        before: Counter[str] = Counter(dict.fromkeys(tier_codes, 0))
        for tier, count in session.execute(
            select(Member.tier, func.count()).where(Member.joined_at < start).group_by(Member.tier)
        ):
            before[tier] += count
        joins: dict[str, Counter[str]] = defaultdict(Counter)
        for month, tier, count in session.execute(
            select(joined, Member.tier, func.count())
            .where(Member.joined_at >= start)
            .group_by(joined, Member.tier)
        ):
            joins[tier][month] += count
    tiers = []
    for tier in sorted(set(before) | set(joins), key=_rank(tier_codes)):
        running = before[tier]
        per_month = []
        for month in months:
            running += joins[tier][month]
            per_month.append({"month": month, "joined": joins[tier][month], "members": running})
        tiers.append({"tier": tier, "months": per_month})
    return {
        "generated_at": serialize.iso_datetime(now),
        "window": {"from": months[0], "to": months[-1], "months": len(months)},
        "tiers": tiers,
    }


def _rank(order: list[str]) -> Any:
    position = {code: index for index, code in enumerate(order)}
    return lambda code: (position.get(code, len(position)), code)


def hottest_member_ids(
    session: Session, limit: int, *, days: int = 365, now: dt.datetime | None = None
) -> list[int]:
    """Ids of the members with the most payments in the last ``days`` days, for cache warming.

    Ties go to the most recent payment, then the lower id, so the answer is stable.
    """
    since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    with translating():
        rows = session.scalars(
            select(Payment.member_id)
            .where(Payment.paid_at >= since)
            .group_by(Payment.member_id)
            .order_by(func.count().desc(), func.max(Payment.paid_at).desc(), Payment.member_id)
            .limit(limit)
        )
        return list(rows)


def _month(session: Session, column: InstrumentedAttribute[dt.datetime]) -> ColumnElement[str]:
    """The UTC calendar month of a timestamp as "YYYY-MM", in this session's SQL dialect.

    The constants are literal SQL, not bound parameters: PostgreSQL only matches a GROUP BY
    expression to the SELECT list when both are textually the same.
    """
    if session.get_bind().dialect.name == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), column)
        return func.to_char(utc, literal_column("'YYYY-MM'")).label("month")
    # SQLite stores these timestamps as UTC text.
    return func.strftime(literal_column("'%Y-%m'"), column).label("month")


def _months(now: dt.datetime, count: int) -> list[str]:
    index = now.year * 12 + now.month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a non-leap year
        return day.replace(year=day.year - years, day=28)


def _decimal(value: Decimal | float | int | None) -> Decimal:
    return Decimal(serialize.money(value))
