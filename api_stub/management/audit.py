"""Every management action goes through the audit trail (db/audit.py): no record, no action.

:meth:`Auditor.action` opens an entry before the action runs and closes it with the HTTP status
and result however the action ends (an HTTPException's status and detail, 500 for anything
else). It also answers the action's own errors: a route names which error becomes which problem
(``errors``), and the entry is closed with that answer. When the entry cannot be opened (the
database is down) the action is refused with 503: an operator can retry, an unrecorded clear
cannot be undone. Refusals of an authenticated caller (403, 429) are recorded in one step;
failing to record them is logged, not raised. Calls without a valid token are only logged:
anyone could fill the table with them.

Arguments are stored as JSON (NUL characters replaced), bounded to MAX_ARGUMENT_BYTES (a longer
list of ids is cut and marked ``"truncated": true``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from fastapi import HTTPException

from api_stub.management.auth import Principal
from api_stub.problems import AUDIT_UNAVAILABLE, ProblemError
from api_stub.runtime import Database
from db import audit
from db.errors import DataError

log = logging.getLogger("api_stub.management.audit")

MAX_ARGUMENT_BYTES: Final = 8 * 1024

# What an action may raise and the answer each gives (the first class that matches).
Errors: TypeAlias = Mapping[type[Exception], Callable[[Any], HTTPException]]
NO_ERRORS: Final[Errors] = MappingProxyType({})


@dataclass(slots=True)
class Outcome:
    """What the action reports; the status defaults to the route's success status."""

    status: int
    result: dict[str, Any] = field(default_factory=dict)


def _storable(value: Any) -> Any:
    # PostgreSQL's JSONB refuses U+0000, which a caller can put in any string it sends.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def bounded(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments as stored: JSON-ready, NUL-free and at most MAX_ARGUMENT_BYTES."""
    clean: dict[str, Any] = _storable(json.loads(json.dumps(arguments, default=str)))
    if len(json.dumps(clean)) <= MAX_ARGUMENT_BYTES:
        return clean
    shown = {k: v if len(json.dumps(v)) < 512 else "..." for k, v in clean.items()}
    return shown | {"truncated": True}


def _detail(exc: HTTPException) -> dict[str, Any]:
    detail = exc.detail
    extensions = exc.extensions if isinstance(exc, ProblemError) else {}
    return {"error": detail if isinstance(detail, str | dict | list) else str(detail), **extensions}


class Auditor:
    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def action(
        self,
        who: Principal,
        action: str,
        arguments: dict[str, Any],
        status: int,
        errors: Errors = NO_ERRORS,
    ) -> AsyncIterator[Outcome]:
        stored = bounded(arguments)
        try:
            entry_id = await self.db.write(
                lambda s: audit.open_entry(s, who.id, who.role.label, action, stored)
            )
        except DataError as exc:
            log.error("audit trail unavailable, %s by %s refused: %s", action, who.id, exc)
            raise AUDIT_UNAVAILABLE("the audit trail is unavailable: action refused") from exc
        outcome = Outcome(status)
        try:
            try:
                yield outcome
            except tuple(errors) as exc:
                answer = next(to(exc) for kind, to in errors.items() if isinstance(exc, kind))
                raise answer from exc
        except HTTPException as exc:
            await self._close(entry_id, exc.status_code, _detail(exc))
            raise
        except BaseException as exc:
            await self._close(entry_id, 500, {"error": type(exc).__name__})
            raise
        await self._close(entry_id, outcome.status, outcome.result)

    async def refused(
        self, who: Principal, action: str, arguments: dict[str, Any], status: int, reason: str
    ) -> None:
        stored = bounded(arguments)
        try:
            await self.db.write(
                lambda s: audit.record(
                    s, who.id, who.role.label, action, stored, status, {"error": reason}
                )
            )
        except DataError as exc:
            log.error("audit of refused %s by %s failed: %s", action, who.id, exc)

    async def entries(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.db.read(lambda s: audit.entries(s, **filters))

    async def _close(self, entry_id: int, status: int, result: dict[str, Any]) -> None:
        stored = bounded(result)
        try:
            await self.db.write(lambda s: audit.close_entry(s, entry_id, status, stored))
        except DataError as exc:
            # The action happened; its opened entry says who started it.
            log.error("audit entry %s not closed (%s): %s", entry_id, status, exc)
