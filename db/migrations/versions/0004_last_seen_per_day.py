"""A member's last sighting moves to its daily activity rows.

The write-behind flush upserts one member_activity_daily row a member and day; updating the
members row too, for last_seen_at, cost as much as the upsert itself. Each daily row now keeps
that day's newest sighting, and a member's last_seen_at is its newest day's (db/queries.py).
Existing values move into the row of their day (created with zero counts where missing).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

_MOVE_IN = """
INSERT INTO member_activity_daily AS a (member_id, day, logins, checkins, page_views, last_seen_at)
SELECT id, {day}, 0, 0, 0, last_seen_at FROM members WHERE last_seen_at IS NOT NULL
ON CONFLICT (member_id, day) DO UPDATE SET last_seen_at = {newest}
"""
_MOVE_BACK = """
UPDATE members SET last_seen_at = (
  SELECT a.last_seen_at FROM member_activity_daily AS a
  WHERE a.member_id = members.id AND a.last_seen_at IS NOT NULL
  ORDER BY a.day DESC LIMIT 1)
"""


def upgrade() -> None:
    op.add_column("member_activity_daily", sa.Column("last_seen_at", TIMESTAMP, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        day = "(last_seen_at AT TIME ZONE 'UTC')::date"
        newest = "GREATEST(a.last_seen_at, EXCLUDED.last_seen_at)"
    else:
        day = "date(last_seen_at)"
        newest = "max(coalesce(a.last_seen_at, excluded.last_seen_at), excluded.last_seen_at)"
    op.execute(_MOVE_IN.format(day=day, newest=newest))
    # Plain ALTER TABLE DROP COLUMN, SQLite's too (3.35+): the column has no index.
    op.drop_column("members", "last_seen_at")


def downgrade() -> None:
    op.add_column("members", sa.Column("last_seen_at", TIMESTAMP, nullable=True))
    op.execute(_MOVE_BACK)
    op.drop_column("member_activity_daily", "last_seen_at")
