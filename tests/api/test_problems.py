"""api_stub/problems.py: every error is a problem document, and the document lists it.

The mechanism on a small app of its own (a route raising a plain HTTPException and declaring it
by hand, a dependency declaring its causes, a body), then routing's own answers on the real
app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from api_stub import problems
from api_stub.problems import NOT_FOUND, PROBLEM_JSON, RATE_LIMITED, raises, responses
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
VALIDATION_REF = {"$ref": "#/components/schemas/ValidationProblem"}


class Body(BaseModel):
    name: str
    size: int


@raises(RATE_LIMITED)
def limited(over: bool = False) -> None:
    if over:
        raise RATE_LIMITED("slow down", headers={"Retry-After": "7"})


def small_app() -> FastAPI:
    app = FastAPI()

    # Declared by hand, raised as a plain HTTPException: both become problems.
    @app.post("/things", responses={409: {"description": "the key was used for another body"}})
    async def create(body: Body, _limit: Annotated[None, Depends(limited)]) -> dict[str, Any]:
        if body.name == "taken":
            raise HTTPException(409, "the key was used for another body")
        if body.name == "reused":
            raise HTTPException(422, "the key was used for another body")
        return {"name": body.name}

    @app.get("/things/{thing_id}", responses=responses(NOT_FOUND))
    async def read(thing_id: int) -> dict[str, Any]:
        if thing_id == 13:
            raise RuntimeError("unlucky")
        raise NOT_FOUND(f"no thing {thing_id}")

    problems.install(app)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: the 500 is answered, then Starlette re-raises for its log.
    transport = httpx.ASGITransport(app=small_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


def test_the_document_lists_each_cause_with_the_problem_schema() -> None:
    document = small_app().openapi()
    create = document["paths"]["/things"]["post"]["responses"]
    assert sorted(create) == ["200", "400", "409", "422", "429"]
    for status in ("400", "409", "429"):
        assert create[status]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}
    assert create["422"]["content"] == {PROBLEM_JSON: {"schema": VALIDATION_REF}}
    assert create["409"]["description"] == "the key was used for another body"
    assert create["429"]["headers"]["Retry-After"]["required"] is True
    read = document["paths"]["/things/{thing_id}"]["get"]["responses"]
    assert sorted(read) == ["200", "404", "422"]  # no body: no 400; no limit: no 429
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ValidationProblem"]["required"] == [
        "type", "title", "status", "detail", "instance", "errors"
    ]  # fmt: skip


async def test_a_plain_http_exception_is_a_problem(client: httpx.AsyncClient) -> None:
    answer = await client.post("/things", json={"name": "taken", "size": 1})
    assert (answer.status_code, answer.headers["content-type"]) == (409, PROBLEM_JSON)
    assert answer.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "the key was used for another body",
        "instance": "/things",
    }
    reused = await client.post("/things", json={"name": "reused", "size": 1})
    assert (reused.status_code, reused.json()["errors"]) == (422, [])


async def test_a_cause_keeps_its_type_and_headers(client: httpx.AsyncClient) -> None:
    answer = await client.post("/things?over=true", json={"name": "x", "size": 1})
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "7")
    assert answer.json()["type"] == RATE_LIMITED.type
    assert answer.json()["title"] == "Too Many Requests"


async def test_validation_errors_name_each_field(client: httpx.AsyncClient) -> None:
    answer = await client.post("/things", json={"size": "big"})
    problem = answer.json()
    assert (answer.status_code, problem["type"]) == (422, problems.INVALID.type)
    assert sorted(error["loc"] for error in problem["errors"]) == [
        ["body", "name"],
        ["body", "size"],
    ]
    assert "body.name" in problem["detail"] and "body.size" in problem["detail"]
    unreadable = await client.post(
        "/things", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )
    assert unreadable.status_code in (400, 422)
    assert unreadable.headers["content-type"] == PROBLEM_JSON


async def test_an_unexpected_error_is_a_500_problem(client: httpx.AsyncClient) -> None:
    answer = await client.get("/things/13")
    assert (answer.status_code, answer.headers["content-type"]) == (500, PROBLEM_JSON)
    assert answer.json()["detail"] == problems.SERVER_ERROR.description  # nothing leaked


async def test_routing_answers_are_problems_and_allow_lists_every_method(api: Api) -> None:
    unknown = await api.client.get("/api/v1/nothing-here")
    assert (unknown.status_code, unknown.headers["content-type"]) == (404, PROBLEM_JSON)
    assert unknown.json()["instance"] == "/api/v1/nothing-here"
    wrong = await api.client.post("/api/v1/members/1")
    assert (wrong.status_code, wrong.headers["content-type"]) == (405, PROBLEM_JSON)
    # Four routes share the path; routing alone would name the first one's methods.
    assert wrong.headers["allow"] == "DELETE, GET, PATCH, PUT"
