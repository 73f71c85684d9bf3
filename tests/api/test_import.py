"""POST /api/v1/members/import: formats, bad rows by line, invalidation in O(1) round trips."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from redis.asyncio.connection import AbstractConnection
from sqlalchemy import Engine

from api_stub.problems import PROBLEM_JSON
from tests.api.conftest import CURRENT, Api
from tests.api.test_members import member_count, new_member, next_member_id

pytestmark = pytest.mark.anyio

DASHBOARD = "/api/v1/analytics/dashboard"


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def as_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    columns = list(dict.fromkeys(name for row in rows for name in row))
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts what this process's asyncio Redis connections send: one write per round trip
    (a pipeline is one write)."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield sent


async def test_import_invalidates_aggregates_in_constant_round_trips(
    api: Api, round_trips: list[int]
) -> None:
    total = (await api.client.get(DASHBOARD)).json()["members"]["total"]
    assert (await api.client.get(DASHBOARD)).headers["x-cache"] == "HIT"

    costs = []
    for size in (3, 300):
        before = round_trips[0]
        answer = await api.client.post(
            "/api/v1/members/import",
            content=jsonl([new_member() for _ in range(size)]),
            headers={"content-type": "application/x-ndjson"},
        )
        costs.append(round_trips[0] - before)
        assert answer.status_code == 201, answer.text
        assert answer.json() == {"imported": size, "bad_rows": 0, "errors": []}

        dashboard = await api.client.get(DASHBOARD, headers=CURRENT)  # not a lagging one
        assert dashboard.headers["x-cache"] == "MISS"
        total += size
        assert dashboard.json()["members"]["total"] == total
    assert costs[0] == costs[1] == 1, costs


async def test_csv_import_and_ids_negative_cached_before_it_become_visible(
    api: Api, engine: Engine
) -> None:
    first_id = next_member_id(engine)
    assert (await api.client.get(f"/api/v1/members/{first_id + 1}")).status_code == 404
    rows = [new_member(), new_member(birth_date="", tier=""), new_member(status="lapsed")]
    answer = await api.client.post(
        "/api/v1/members/import", content=as_csv(rows), headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 201, answer.text
    second = await api.client.get(f"/api/v1/members/{first_id + 1}")
    assert second.status_code == 200
    assert (second.json()["email"], second.json()["tier"]) == (rows[1]["email"], "bronze")
    assert second.json()["birth_date"] is None


async def test_bad_rows_are_reported_by_line_and_nothing_is_written(
    api: Api, engine: Engine
) -> None:
    taken = (await api.client.get("/api/v1/members/5")).json()["email"]
    twice = new_member()
    rows = [
        new_member(),  # line 1
        new_member(email="nope"),  # line 3
        new_member(),  # line 4
        new_member(email=taken),  # line 5
        twice,  # line 6
        twice | {"last_name": "Again"},  # line 7
        new_member(status="bogus", country="ZZ"),  # line 8
    ]
    body = jsonl(rows).replace(b"\n", b"\n\n", 1) + b"[1, 2]\n"  # blank line 2; line 9
    count = member_count(engine)

    answer = await api.client.post("/api/v1/members/import", content=body)
    assert answer.status_code == 422
    report = answer.json()
    assert (report["imported"], report["bad_rows"]) == (0, 5)
    # A problem document: each bad row's errors located as ["body", line, field].
    fields: dict[int, list[str]] = {}
    for error in report["errors"]:
        line, *field = error["loc"][1:]
        fields.setdefault(line, []).extend(field or [""])
    assert fields == {3: ["email"], 5: ["email"], 7: ["email"], 8: ["status", "country"], 9: [""]}
    assert "repeats line 6" in str(report["errors"])
    assert member_count(engine) == count

    partial = await api.client.post("/api/v1/members/import?partial=true", content=body)
    assert partial.status_code == 201
    assert (partial.json()["imported"], partial.json()["bad_rows"]) == (3, 5)
    assert member_count(engine) == count + 3


async def test_csv_line_numbers_count_the_header_and_multiline_values(api: Api) -> None:
    good = new_member()
    body = (
        "email,first_name,last_name,country\n"
        f'{good["email"]},"Two\nLines",X,GB\n'
        "bad,A,B,GB\n"
        "c@example.org,A,B,GB,extra\n"
    ).encode()
    answer = await api.client.post(
        "/api/v1/members/import", content=body, headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["detail"] == "2 bad row(s); nothing was imported"
    assert [error["loc"][:2] for error in problem["errors"]] == [["body", 4], ["body", 5]]
    assert (problem["imported"], problem["bad_rows"]) == (0, 2)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"", "application/x-ndjson", 422),
        (b"\n\n", "application/x-ndjson", 422),
        (b"email,nickname\nx@y.z,X\n", "text/csv", 422),
        (b"\xff\xfe\x00", "text/csv", 422),
    ],
)
async def test_unreadable_files_are_rejected_whole(
    api: Api, engine: Engine, body: bytes, content_type: str, status: int
) -> None:
    count = member_count(engine)
    answer = await api.client.post(
        "/api/v1/members/import", content=body, headers={"content-type": content_type}
    )
    assert answer.status_code == status
    problem = answer.json()
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert isinstance(problem["detail"], str) and problem["status"] == status
    assert problem["errors"][0]["loc"] == ["body"]
    assert member_count(engine) == count
