"""The audit trail of the cache management API: who did what, with which arguments, and how
it ended.

One row per management action (api_stub.management). An action is opened before it runs
(:func:`open_entry`, ``status`` NULL) and closed with its HTTP status and result
(:func:`close_entry`), so an action whose process died half-way still shows who started it.
A refused action (insufficient role, rate limit) is recorded closed, in one step
(:func:`record`). Like db.reports, writes run in the caller's transaction and do not commit,
and every function returns JSON-ready values::

    entry  {"id", "at": ISO, "who", "role", "action", "arguments": {...},
            "status": int | None, "result": {...} | None, "finished_at": ISO | None}
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import Identity, Index, SmallInteger, String, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from db import serialize
from db.errors import NotFound, translating
from db.models import Base, BigId, Document, Timestamp

__all__ = ["MAX_LIST", "ManagementAudit", "close_entry", "entries", "open_entry", "record"]

MAX_LIST: Final = 1000


class ManagementAudit(Base):
    """One management action: opened before it runs, closed with its outcome."""

    __tablename__ = "management_audit"

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    who: Mapped[str] = mapped_column(String(64))  # the token's id, never the token
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(Document)
    status: Mapped[int | None] = mapped_column(SmallInteger)  # HTTP status; NULL while running
    result: Mapped[dict[str, Any] | None] = mapped_column(Document)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        # The admin's reads: newest first, overall or of one token.
        Index("ix_management_audit_at", "at"),
        Index("ix_management_audit_who_at", "who", "at"),
    )


def _entry(row: ManagementAudit) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": serialize.iso_datetime(row.at),
        "who": row.who,
        "role": row.role,
        "action": row.action,
        "arguments": row.arguments,
        "status": row.status,
        "result": row.result,
        "finished_at": serialize.iso_datetime(row.finished_at),
    }


def open_entry(
    session: Session, who: str, role: str, action: str, arguments: dict[str, Any]
) -> int:
    """Record an action about to run; its id."""
    with translating():
        row = ManagementAudit(who=who, role=role, action=action, arguments=arguments)
        session.add(row)
        session.flush()
        return row.id


def close_entry(session: Session, entry_id: int, status: int, result: dict[str, Any]) -> None:
    """Record how an opened action ended."""
    stmt = (
        update(ManagementAudit)
        .where(ManagementAudit.id == entry_id)
        .values(status=status, result=result, finished_at=func.now())
    )
    with translating():
        if not session.execute(stmt).rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"audit entry {entry_id}")


def record(
    session: Session,
    who: str,
    role: str,
    action: str,
    arguments: dict[str, Any],
    status: int,
    result: dict[str, Any],
) -> int:
    """Record an action that already ended (a refusal); its id."""
    with translating():
        row = ManagementAudit(
            who=who,
            role=role,
            action=action,
            arguments=arguments,
            status=status,
            result=result,
            finished_at=func.now(),
        )
        session.add(row)
        session.flush()
        return row.id


def entries(
    session: Session,
    *,
    who: str | None = None,
    action: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Entries, newest first; ``before_id`` pages back from an earlier answer's last id."""
    stmt = select(ManagementAudit)
    if who is not None:
        stmt = stmt.where(ManagementAudit.who == who)
    if action is not None:
        stmt = stmt.where(ManagementAudit.action == action)
    if before_id is not None:
        stmt = stmt.where(ManagementAudit.id < before_id)
    stmt = stmt.order_by(ManagementAudit.id.desc()).limit(max(1, min(int(limit), MAX_LIST)))
    with translating():
        return [_entry(row) for row in session.scalars(stmt)]
