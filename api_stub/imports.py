"""Bulk import of members: JSON lines or CSV, every bad row reported by its line number.

A row is bad when its fields are (schemas.MemberCreate), when its status, tier or country is
unknown, or when its email is taken, by a member or by an earlier row of the same file. The
database checks run in the import's own transaction, so what was checked is what is inserted;
an email taken between the check and the insert fails the whole import (409), nothing written.

Lines are the file's physical lines, from 1; a CSV's header is line 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api_stub.schemas import MemberCreate
from db import queries

MAX_ROWS: Final = 100_000  # one request; larger files go in several
MAX_REPORTED: Final = 1_000  # bad rows listed in an answer; bad_rows counts them all
JSON_LINES_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-lines",
    }
)
CSV_TYPES: Final = frozenset({"text/csv", "application/csv"})
FIELDS: Final = frozenset(MemberCreate.model_fields)
LOOKUP_FIELDS: Final = (("status", "statuses"), ("tier", "tiers"), ("country", "countries"))


class ImportRejected(Exception):
    """The file as a whole cannot be read: no rows, too many, undecodable, a bad CSV header."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Row:
    line: int
    values: dict[str, Any]


@dataclass(slots=True)
class BadRow:
    line: int
    errors: list[dict[str, str]]

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "errors": self.errors}

    def field_errors(self) -> list[dict[str, Any]]:
        """Its errors located as a request's fields are: ``["body", line, field]``."""
        return [
            {
                "loc": ["body", self.line, *([error["field"]] if error["field"] else [])],
                "msg": error["msg"],
                "type": "bad_row",
            }
            for error in self.errors
        ]


@dataclass(slots=True)
class Parsed:
    rows: list[Row] = field(default_factory=list)  # rows whose fields are valid
    bad: list[BadRow] = field(default_factory=list)


def parse(body: bytes, content_type: str) -> Parsed:
    """Read and validate every row; the format comes from the content type, else the body."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRejected(f"the body is not UTF-8: {exc}") from None
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSON_LINES_TYPES:
        records = _json_lines(text)
    elif media in CSV_TYPES:
        records = _csv(text)
    else:
        records = _json_lines(text) if text.lstrip().startswith("{") else _csv(text)
    parsed = Parsed()
    for line, record in records:
        if len(parsed.rows) + len(parsed.bad) >= MAX_ROWS:
            raise ImportRejected(f"more than {MAX_ROWS} rows; split the file", status=413)
        if isinstance(record, BadRow):
            parsed.bad.append(record)
            continue
        try:
            member = MemberCreate.model_validate(record)
        except ValidationError as exc:
            parsed.bad.append(BadRow(line, [_field_error(error) for error in exc.errors()]))
            continue
        parsed.rows.append(Row(line, member.values()))
    if not parsed.rows and not parsed.bad:
        raise ImportRejected("no rows to import")
    return parsed


def check(session: Session, rows: list[Row]) -> list[BadRow]:
    """The rows the database would refuse: unknown lookup codes, emails already taken."""
    known = {
        name: {item["code"] for item in queries.lookup(session, table)}
        for name, table in LOOKUP_FIELDS
    }
    taken = queries.taken_emails(session, (row.values["email"] for row in rows))
    first_line: dict[str, int] = {}
    bad: list[BadRow] = []
    for row in rows:
        errors: list[dict[str, str]] = []
        for name, _table in LOOKUP_FIELDS:
            code = row.values[name].upper() if name == "country" else row.values[name]
            if code not in known[name]:
                errors.append({"field": name, "msg": f"unknown {name} {row.values[name]!r}"})
        email = row.values["email"].lower()
        if email in taken:
            errors.append({"field": "email", "msg": "already taken by a member"})
        elif email in first_line:
            errors.append({"field": "email", "msg": f"repeats line {first_line[email]}"})
        else:
            first_line[email] = row.line
        if errors:
            bad.append(BadRow(row.line, errors))
    return bad


def _json_lines(text: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    # Only "\n" ends a line: str.splitlines() would also split at a U+2028 inside a string.
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        try:
            record = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            yield line, BadRow(line, [{"field": "", "msg": f"not JSON: {exc}"}])
            continue
        if not isinstance(record, dict):
            yield line, BadRow(line, [{"field": "", "msg": "expected a JSON object"}])
            continue
        yield line, record


def _csv(text: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise ImportRejected(f"line 1: unreadable CSV header: {exc}") from None
    if not header:
        raise ImportRejected("no CSV header")
    unknown = sorted(set(header) - FIELDS)
    if unknown:
        raise ImportRejected(
            f"line 1: unknown column(s) {', '.join(map(repr, unknown))};"
            f" expected some of {', '.join(sorted(FIELDS))}"
        )
    end = reader.line_num
    while True:
        start = end + 1  # a quoted value may span lines: a row starts after the previous one
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            yield start, BadRow(start, [{"field": "", "msg": f"unreadable CSV: {exc}"}])
            continue
        end = reader.line_num
        if not values:
            continue  # a blank line
        if len(values) > len(header):
            yield start, BadRow(start, [{"field": "", "msg": "more values than columns"}])
            continue
        # An empty cell is a missing value: the default, or "field required".
        cells = zip(header, values, strict=False)  # a short row leaves the rest missing
        yield start, {name: value for name, value in cells if value != ""}


def _field_error(error: Any) -> dict[str, str]:
    return {"field": ".".join(str(part) for part in error["loc"]), "msg": error["msg"]}
