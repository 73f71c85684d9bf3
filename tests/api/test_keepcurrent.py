"""Keeping list pages current (api_stub.keepcurrent): the pages readers keep reading are
recomputed before their lag runs out, in one database session per cycle, against real Redis
and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest
from sqlalchemy import event, text

from api_stub.keepcurrent import KeepCurrent
from api_stub.rules import rule_for
from cache.kinds import KINDS
from config import Settings
from tests.api.conftest import api_settings_for, serve

pytestmark = pytest.mark.anyio

PAGES = "/api/v1/members?tier=bronze&page_size=10&page={page}"


def _is_page(statement: str) -> bool:
    """A page query of the member list (its total is another query)."""
    return "ORDER BY members.id" in statement and "LIMIT" in statement


def _list_reads(statements: list[str]) -> int:
    return sum(_is_page(s) for s in statements)


async def test_pages_read_recently_are_recomputed_before_their_readers_come_in_one_session(
    prefix: str, database_url: str
) -> None:
    # The lag capped at 1 s: a cycle every 0.25 s, a page due once 0.5 s old.
    settings: Settings = api_settings_for(prefix, database_url, cache_max_lag_seconds=1.0)
    async with serve(settings) as api:
        sessions: list[int] = []  # the connection each page query ran on

        def page_query(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if _is_page(statement):
                sessions.append(id(conn))

        event.listen(api.app.state.running.db.engine, "before_cursor_execute", page_query)
        # Read at once: each page is confirmed when its request began, so all five fall due in
        # one cycle (or two, when a cycle begins between them), however slow the machine.
        read_at = time.monotonic()
        pages = await asyncio.gather(*(api.client.get(PAGES.format(page=p)) for p in range(1, 6)))
        assert [p.headers["x-cache"] for p in pages] == ["MISS"] * 5
        member = pages[0].json()["items"][0]

        # A change retires every page; nobody reads them for more than the lag.
        patched = await api.client.patch(
            f"/api/v1/members/{member['id']}", json={"first_name": "Ahead"}
        )
        assert patched.status_code == 200
        sessions.clear()
        deadline = time.monotonic() + 10.0
        while len(sessions) < 5 and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert len(sessions) >= 5, "every page read recently was recomputed"
        # The pages due in a cycle share one session (one checkout, one transaction).
        assert len(set(sessions)) <= 2, sessions

        # Past the lag of the first reads, the readers are answered from the cache, never by
        # the route: the first page shows the change.
        await anyio.sleep(max(0.0, read_at + 1.1 - time.monotonic()))
        queried = len(api.statements)
        again = [await api.client.get(PAGES.format(page=page)) for page in range(1, 6)]
        assert all(a.headers["x-cache"] in ("HIT", "STALE") for a in again)
        assert _list_reads(api.statements[queried:]) == 0, "a reader past the lag ran the route"
        assert again[0].json()["items"][0]["first_name"] == "Ahead"

        # A page nobody read is left alone.
        unread = await api.client.get(PAGES.format(page=6))
        assert unread.headers["x-cache"] == "MISS"

        # Without a change, nothing is recomputed: the kept pages are confirmed again.
        await anyio.sleep(0.6)
        quiet = len(api.statements)
        await anyio.sleep(0.8)
        assert _list_reads(api.statements[quiet:]) == 0


async def test_reads_share_the_session_only_in_the_task_that_opened_it(
    prefix: str, database_url: str
) -> None:
    settings = api_settings_for(prefix, database_url)
    async with serve(settings) as api:
        db = api.app.state.running.db
        checkouts: list[int] = []
        event.listen(db.engine, "checkout", lambda *_: checkouts.append(1))

        def backend(session: Any) -> int:
            return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())

        def failing(session: Any) -> int:
            return int(session.execute(text("SELECT 1/0")).scalar_one())

        async with db.shared():
            first = await db.read(backend)
            second = await db.read(backend)
            assert len(checkouts) == 1, "two reads of the block, one checkout"
            # A task started inside the block reads in a session of its own.
            other = await asyncio.get_running_loop().create_task(db.read(backend))
            assert len(checkouts) == 2 and first == second
            try:
                await db.read(failing)
            except Exception as exc:  # the error reaches the caller; the block goes on
                assert "division by zero" in str(exc)
            else:
                raise AssertionError("the failing read did not fail")
            assert await db.read(backend) > 0  # on a clean transaction (perhaps a new connection)
        assert other != first


def test_only_recent_variants_are_kept_for_refresh() -> None:
    rule = rule_for(KINDS["member_list"])
    keep = KeepCurrent()
    keep.read("old", rule, {}, {}, {}, 5.0, now=0.0)
    keep.read("new", rule, {}, {}, {}, 5.0, now=20.0)
    window = KINDS["member_list"].kept_current
    assert [v for v, _ in keep.recent(now=window + 1.0)] == ["new"]
    assert [v for v, _ in keep.recent(now=window + 1.0)] == ["new"], "the old one is forgotten"
    keep.read("new", rule, {}, {}, {}, 5.0, now=window + 10.0)  # read again: kept longer
    assert [v for v, _ in keep.recent(now=window + 25.0)] == ["new"]
    assert list(keep.recent(now=2 * window + 11.0)) == []
