"""The dependency in front of every management route: token, role, rate limit, in that order.

    no token, a malformed header, an unknown token   401 + WWW-Authenticate: Bearer
    a known token whose role is below the route's    403
    over the token's rate limit                      429 + Retry-After

Authentication runs before FastAPI validates the route's parameters and body, so a caller
without a valid token learns nothing about them. Refusals of an action route (403, 429) are
recorded in the audit trail with the caller's token id. Refused tokens (an unknown one: 401,
per client address; a known one below the route's role: 403, per token label) are counted
cluster-wide, and a burst raises one security alert (api_stub/management/refusals.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api_stub.management.auth import Principal, Role
from api_stub.management.runtime import ManagementRuntime, management_of
from api_stub.management.tokens import TokenStoreUnavailable
from api_stub.problems import (
    AUDIT_UNAVAILABLE,
    FORBIDDEN,
    RATE_LIMITED,
    REDIS_UNAVAILABLE,
    UNAUTHENTICATED,
    Cause,
    ProblemError,
    raises,
)

log = logging.getLogger("api_stub.management.guard")
TOKEN_STORE_UNAVAILABLE = REDIS_UNAVAILABLE  # added tokens live in the durable Redis

REALM: Final = "cache-management"
# auto_error=False: the 401 (with its WWW-Authenticate) is ours; it also declares the scheme.
bearer = HTTPBearer(auto_error=False, description="A management token (viewer/operator/admin)")


def _unauthorized(error: str | None) -> ProblemError:
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}"'
    return UNAUTHENTICATED(
        "a valid bearer token is required", headers={"WWW-Authenticate": challenge}
    )


def token_store_unavailable(exc: TokenStoreUnavailable) -> ProblemError:
    """The 503 of an unreachable token store; why goes to the log only (the guard answers
    callers it has not authenticated yet)."""
    log.error("management token store unavailable: %s", exc)
    return TOKEN_STORE_UNAVAILABLE("the token store is unavailable; try again")


def _arguments(request: Request) -> dict[str, Any]:
    return {"path": request.url.path, "query": dict(request.query_params)}


def require(role: Role, action: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting tokens of ``role`` or above; ``action`` names an audited route.

    Its causes go into the OpenAPI document of every route behind it: 401, 429 and 503 (the
    token store unavailable) always, 403 when some token's role is below ``role``, 503 when
    the action must be audited first.
    """
    causes: list[Cause] = [UNAUTHENTICATED, RATE_LIMITED, TOKEN_STORE_UNAVAILABLE]
    if role > min(Role):
        causes.append(FORBIDDEN)
    if action is not None:
        causes.append(AUDIT_UNAVAILABLE)

    @raises(*causes)
    async def guard(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        management: Annotated[ManagementRuntime, Depends(management_of)],
    ) -> Principal:
        if credentials is None:
            raise _unauthorized(None)
        try:
            who = await management.token_store.authenticate(credentials.credentials)
        except TokenStoreUnavailable as exc:
            raise token_store_unavailable(exc) from exc
        if who is None:
            log.warning("management call with an unknown token: %s", request.url.path)
            address = request.client.host if request.client is not None else "unknown"
            await management.refusals.refused("address", address, 401, request.url.path)
            raise _unauthorized("invalid_token")
        if who.role < role:
            detail = f"the {who.role.label} role may not do this; {role.label} is required"
            await management.refusals.refused("token", who.id, 403, request.url.path)
            if action is not None:
                await management.auditor.refused(who, action, _arguments(request), 403, detail)
            raise FORBIDDEN(detail)
        verdict = await management.limiter.hit(who.id)
        if not verdict.allowed:
            detail = f"rate limit of {verdict.limit} requests per {management.limiter.window_s}s"
            if action is not None:
                await management.auditor.refused(who, action, _arguments(request), 429, detail)
            headers = {"Retry-After": str(verdict.retry_after_s)}
            raise RATE_LIMITED(detail, headers=headers)
        return who

    return guard


def acting(role: Role, action: str) -> Any:
    """The dependency of an audited route: tokens of ``role`` or above, refusals recorded."""
    return Depends(require(role, action))


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Management = Annotated[ManagementRuntime, Depends(management_of)]
