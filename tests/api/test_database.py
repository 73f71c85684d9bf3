"""The API's database reads: single statements outside any transaction, the rest inside one."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from tests.api.conftest import api_settings_for, serve

pytestmark = pytest.mark.anyio


def _status(session: Session) -> TransactionStatus:
    """The server's transaction state once the session has run a statement."""
    session.execute(text("SELECT 1"))
    raw: Any = session.connection().connection.dbapi_connection
    return TransactionStatus(raw.info.transaction_status)


async def test_a_query_opens_no_transaction_and_a_read_does(prefix: str, database_url: str) -> None:
    async with serve(api_settings_for(prefix, database_url)) as api:
        db = api.app.state.running.db
        assert await db.query(_status) is TransactionStatus.IDLE  # no BEGIN, no ROLLBACK
        assert await db.read(_status) is TransactionStatus.INTRANS  # rolled back at the end
        # A connection a query used goes back to the pool as transactional as it came.
        assert await db.read(_status) is TransactionStatus.INTRANS


async def test_a_member_miss_reads_its_row_outside_a_transaction(
    prefix: str, database_url: str
) -> None:
    async with serve(api_settings_for(prefix, database_url)) as api:
        db = api.app.state.running.db
        seen: list[bool] = []

        def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "FROM members" in statement:
                seen.append(bool(conn.connection.dbapi_connection.autocommit))

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            first = await api.client.get("/api/v1/members/7")
            page = await api.client.get("/api/v1/members", params={"tier": "gold"})
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        assert page.status_code == 200
        # The record, the page and the page's total: each one statement, none in a transaction.
        assert seen and all(seen), seen
