"""Problem details (RFC 9457): the one shape of every error the API answers.

Every 4xx and 5xx, whoever raises it (a route, a dependency, request validation, the data
layer, routing's 404/405, the caching layer's negative hit), is an ``application/problem+json``
document::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "no member 7", "instance": "/api/v1/members/7"}

A 422 adds ``errors``: one ``{"loc", "msg", "type"}`` per refused field, ``loc`` naming where
(``["body", "email"]``, ``["query", "page"]``, ``["body", 4, "email"]`` for line 4 of an
import). Headers of the cause (WWW-Authenticate, Retry-After, Allow) are kept.

A *cause* is one reason the API refuses or fails a request, declared once here with its status,
title and the headers it carries. Code raises it (``raise RATE_LIMITED("...", headers=...)``),
or ``raise invalid_field(["header", "Idempotency-Key"], "...")`` for a 422 naming one field;
a plain ``HTTPException(status, detail)`` becomes a problem of type ``about:blank`` too.

The OpenAPI document lists every status each route can answer, found where the cause applies:

- a dependency marked ``@raises(...)`` (the management guard: 401, 403, 429; the route's
  services: 503 when the database is unavailable) adds its causes to every route using it;
- a route with parameters or a body can answer 422; one with a bounded body 413;
- a route's own causes: ``@router.get(..., responses=responses(NOT_FOUND, CONFLICT))``.

Every 4xx/5xx response of the document (``responses={404: {"description": ...}}`` written by
hand included) is given the problem schema under ``application/problem+json``, unless it
declares a content of its own (the health report's 503).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, TypeVar

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from api_stub.imports import ImportRejected
from db.errors import Conflict, DatabaseUnavailable, InvalidData, NotFound, UnknownLookup

log = logging.getLogger("api_stub.problems")

PROBLEM_JSON: Final = "application/problem+json"
# Non-resolvable type URIs (RFC 9457 3.1.1 suggests tag URIs for these).
TYPE_BASE: Final = "tag:membership-cache,2026:problem:"
CAUSES_ATTR: Final = "__problem_causes__"
# psycopg names the violated constraint; the models name it fk_<table>_<column>_<referred>.
_FOREIGN_KEY: Final = re.compile(r"fk_members_(status|tier|country)_")
MAX_DETAILED_ERRORS: Final = 3  # errors summarised in a 422's detail; ``errors`` has them all

F = TypeVar("F", bound=Callable[..., Any])


# --- the document --------------------------------------------------------------------------
class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, path or header, then names")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details; extension members (``partial``, ``bad_rows``) may follow."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="identifies the cause; about:blank: the status says it")
    title: str = Field(description="the cause, the same for every occurrence")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="this occurrence, for a person")
    instance: str = Field(description="the path requested")


class ValidationProblem(Problem):
    """A 422: the request's fields that were refused."""

    model_config = ConfigDict(title="ValidationProblem")

    errors: list[FieldError]


# --- causes --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Header:
    name: str
    description: str
    required: bool = True  # sent with every answer of the cause


@dataclass(frozen=True, slots=True)
class Cause:
    """One reason for an error answer: its status, its type and title, what it sends."""

    status: int
    description: str  # the OpenAPI response's description
    slug: str | None = None  # its own type URI; None: about:blank
    headers: tuple[Header, ...] = ()

    @property
    def type(self) -> str:
        return TYPE_BASE + self.slug if self.slug else "about:blank"

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def __call__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> ProblemError:
        """The exception to raise for one occurrence."""
        return ProblemError(self, detail or self.description, headers, extensions)


class ProblemError(HTTPException):
    """An occurrence of a :class:`Cause`; ``extensions`` are added to the document."""

    def __init__(
        self,
        cause: Cause,
        detail: str,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(cause.status, detail, dict(headers) if headers else None)
        self.cause = cause
        self.extensions = dict(extensions or {})


UNREADABLE_BODY = Cause(400, "the body cannot be read (not UTF-8 JSON)")
UNAUTHENTICATED = Cause(
    401,
    "no valid bearer token",
    slug="unauthenticated",
    headers=(Header("WWW-Authenticate", 'the scheme and realm: Bearer realm="..."'),),
)
FORBIDDEN = Cause(403, "the token's role is below the one the route requires", slug="forbidden")
NOT_FOUND = Cause(404, "nothing exists at this path")
CONFLICT = Cause(409, "the request conflicts with the current state (an email taken, a version)")
TOO_LARGE = Cause(413, "the request's body is too large")
INVALID = Cause(422, "the request's fields are invalid; errors names each", slug="invalid")
RATE_LIMITED = Cause(
    429,
    "over the token's rate limit",
    slug="rate-limited",
    headers=(Header("Retry-After", "seconds until the window ends"),),
)
DATABASE_UNAVAILABLE = Cause(503, "the database is unavailable", slug="database-unavailable")
REDIS_UNAVAILABLE = Cause(503, "Redis is unavailable", slug="redis-unavailable")
BROKER_UNAVAILABLE = Cause(503, "the task broker is unavailable", slug="broker-unavailable")
WRITEBEHIND_UNAVAILABLE = Cause(
    503,
    "the activity store cannot take or read events now (Redis away, backlog full, replicas"
    " missing); Retry-After when nothing was recorded",
    slug="writebehind-unavailable",
    headers=(Header("Retry-After", "seconds to wait before a retry", required=False),),
)
AUDIT_UNAVAILABLE = Cause(
    503, "the audit trail is unavailable: the action is refused", slug="audit-unavailable"
)
SERVER_ERROR = Cause(500, "an unexpected error; it is logged")


def invalid_field(loc: Sequence[str | int], message: str) -> ProblemError:
    """A 422 naming one refused field (``("query", "pattern")``), as request validation does."""
    where = ".".join(str(part) for part in loc)
    error = {"loc": list(loc), "msg": message, "type": "value_error"}
    return INVALID(f"{where}: {message}", errors=[error])


def raises(*causes: Cause) -> Callable[[F], F]:
    """Declare the causes a dependency (or endpoint) may raise: every route using it lists
    them in the OpenAPI document."""

    def mark(function: F) -> F:
        setattr(function, CAUSES_ATTR, (*getattr(function, CAUSES_ATTR, ()), *causes))
        return function

    return mark


def responses(*causes: Cause | int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for its own causes (a bare status: that status's phrase).

    The problem schema and media type are added to the document by :func:`install`.
    """
    found = [cause if isinstance(cause, Cause) else _generic(cause) for cause in causes]
    return {status: _response(group) for status, group in _by_status(found).items()}


# --- answers -------------------------------------------------------------------------------
def document(
    status: int,
    detail: str,
    instance: str,
    *,
    cause: Cause | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    cause = cause or _generic(status)
    return {
        **extensions,
        "type": cause.type,
        "title": cause.title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }


def render(
    status: int, detail: str, instance: str, *, cause: Cause | None = None, **extensions: Any
) -> bytes:
    """The bytes of a problem document (the caching layer answers them itself)."""
    return orjson.dumps(document(status, detail, instance, cause=cause, **extensions))


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    cause: Cause | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body = render(status, detail, request.url.path, cause=cause, **extensions)
    return Response(body, status, dict(headers or {}), media_type=PROBLEM_JSON)


def _parts(exc: StarletteHTTPException) -> tuple[Cause | None, dict[str, Any], str]:
    """An HTTP error's cause, document extensions and detail text."""
    if isinstance(exc, ProblemError):
        cause: Cause | None = exc.cause
        extensions = exc.extensions
    else:
        cause, extensions = None, {}
    if exc.status_code == 422 and "errors" not in extensions:
        extensions = {**extensions, "errors": []}  # the schema's: no field was named
    detail = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
    return cause, extensions, detail


def asgi_answer(
    exc: StarletteHTTPException, instance: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of an error, for the pure-ASGI paths that answer before
    FastAPI: the document its exception handler would send."""
    cause, extensions, detail = _parts(exc)
    body = render(exc.status_code, detail, instance, cause=cause, **extensions)
    headers = [(b"content-type", PROBLEM_JSON.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    return exc.status_code, headers, body


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # routing's 404 and 405 are Starlette's
    cause, extensions, detail = _parts(exc)
    headers = exc.headers
    if exc.status_code == 405:
        # Routing names the methods of the first route of the path; Allow lists them all.
        headers = {**(headers or {}), "Allow": ", ".join(_methods_of(request))}
    return problem_response(
        request, exc.status_code, detail, cause=cause, headers=headers, **extensions
    )


def _methods_of(request: Request) -> list[str]:
    path = request.scope["path"]
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and route.methods:
            methods.update(route.methods)
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error["loc"]), "msg": str(error["msg"]), "type": str(error["type"])}
        for error in exc.errors()
    ]
    return invalid_fields(request, errors)


def invalid_fields(request: Request, errors: list[dict[str, Any]], **extensions: Any) -> Response:
    """A 422 naming each refused field (``loc``, ``msg``, ``type``)."""
    shown = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in errors[:MAX_DETAILED_ERRORS]
    )
    more = len(errors) - MAX_DETAILED_ERRORS
    detail = shown + (f"; and {more} more" if more > 0 else "")
    return problem_response(request, 422, detail, cause=INVALID, errors=errors, **extensions)


async def _invalid_data(request: Request, exc: Exception) -> Response:
    message = str(exc)
    found = _FOREIGN_KEY.search(message)
    if found is not None:
        name = found.group(1)
        error = {"loc": ["body", name], "msg": f"unknown {name}", "type": "value_error"}
    else:
        error = {"loc": ["body"], "msg": message, "type": "value_error"}
    return invalid_fields(request, [error])


async def _not_found(request: Request, exc: Exception) -> Response:
    return problem_response(request, 404, str(exc) or NOT_FOUND.description, cause=NOT_FOUND)


async def _conflict(request: Request, exc: Exception) -> Response:
    return problem_response(request, 409, str(exc) or CONFLICT.description, cause=CONFLICT)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.error("database unavailable: %s", exc)
    cause = DATABASE_UNAVAILABLE
    return problem_response(request, 503, cause.description, cause=cause)


async def _import_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImportRejected)
    if exc.status == 422:
        return invalid_fields(
            request, [{"loc": ["body"], "msg": str(exc), "type": "import_rejected"}]
        )
    return problem_response(request, exc.status, str(exc))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception and re-raises it after this answer.
    return problem_response(request, 500, SERVER_ERROR.description, cause=SERVER_ERROR)


HANDLERS: Final[Mapping[type[Exception], Callable[[Request, Exception], Any]]] = {
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
    InvalidData: _invalid_data,
    NotFound: _not_found,
    UnknownLookup: _not_found,
    Conflict: _conflict,
    DatabaseUnavailable: _database_unavailable,
    ImportRejected: _import_rejected,
    Exception: _server_error,
}


# --- the OpenAPI document ------------------------------------------------------------------
def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document, and document them so."""
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(app, generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def document_problems(app: FastAPI, schema: dict[str, Any]) -> None:
    """Add each route's causes to ``schema`` and give every error the problem schema."""
    paths: dict[str, Any] = schema.get("paths", {})
    # Route contexts: the routes as included (prefix, router dependencies, body limit).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        by_status = _by_status(causes_of(route))
        item = paths.get(route.path_format or "", {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is None:
                continue
            answers = operation.setdefault("responses", {})
            for status, group in by_status.items():
                declared = answers.get(str(status))
                if declared is None or _is_validation_error(declared):
                    answers[str(status)] = _response(group)
                elif "content" not in declared:  # the route's own causes of that status too
                    _merge(declared, _response(group))
            operation["responses"] = dict(sorted(answers.items()))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for operation in _operations(paths):
        for status, answer in operation.get("responses", {}).items():
            if status[:1] in ("4", "5") and (
                "content" not in answer or _is_validation_error(answer)
            ):
                model = ValidationProblem if status == "422" else Problem
                answer["content"] = {
                    PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
                }
    _, definitions = models_json_schema(
        [(Problem, "serialization"), (ValidationProblem, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    components.update(definitions.get("$defs", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def causes_of(route: RouteContext) -> list[Cause]:
    """What a route can answer besides success: its dependencies' causes, 422 when it takes
    parameters or a body, 400 when it reads a JSON body, 413 when that body is bounded."""
    found: list[Cause] = []
    for call in _calls(route.dependant):
        found.extend(getattr(call, CAUSES_ATTR, ()))
    if route.dependant.query_params or route.dependant.path_params or route.body_field:
        found.append(INVALID)
    if route.body_field is not None:
        found.append(UNREADABLE_BODY)
        if getattr(route, "max_body_size", None) is not None:
            found.append(TOO_LARGE)
    return found


def _merge(declared: dict[str, Any], found: Mapping[str, Any]) -> None:
    """One response for two groups of causes of a status: both descriptions; a header is
    required only if both groups send it always."""
    if found["description"] not in declared.get("description", ""):
        declared["description"] = f"{declared.get('description', '')}; {found['description']}"
    mine: dict[str, Any] = declared.get("headers", {})
    theirs: Mapping[str, Any] = found.get("headers", {})
    for name in {*mine, *theirs}:
        both = name in mine and name in theirs
        header = dict(mine.get(name) or theirs[name])
        header["required"] = both and mine[name]["required"] and theirs[name]["required"]
        mine[name] = header
    if mine:
        declared["headers"] = mine


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _operations(paths: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for item in paths.values():
        for value in item.values():
            if isinstance(value, dict) and "responses" in value:
                yield value


def _is_validation_error(answer: Mapping[str, Any]) -> bool:
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _generic(status: int) -> Cause:
    return Cause(status, HTTPStatus(status).phrase)


def _by_status(causes: Iterable[Cause]) -> dict[int, list[Cause]]:
    grouped: dict[int, list[Cause]] = {}
    for cause in causes:
        group = grouped.setdefault(cause.status, [])
        if cause not in group:
            group.append(cause)
    return dict(sorted(grouped.items()))


def _response(group: Sequence[Cause]) -> dict[str, Any]:
    """One OpenAPI response for the causes of one status (their headers: required only if
    every cause sends them)."""
    headers: dict[str, dict[str, Any]] = {}
    names = {header.name for cause in group for header in cause.headers}
    for name in sorted(names):
        found = [h for cause in group for h in cause.headers if h.name == name]
        every = len(found) == len(group) and all(h.required for h in found)
        headers[name] = {
            "description": found[0].description,
            "required": every,
            "schema": {"type": "string"},
        }
    answer: dict[str, Any] = {"description": "; ".join(cause.description for cause in group)}
    if headers:
        answer["headers"] = headers
    return answer
