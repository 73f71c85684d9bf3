"""The routes of the management tokens (admin), under /api/v1/cache/tokens::

    GET    /tokens           every token by label: role, bootstrap or stored, added, revoked
    POST   /tokens           {"role", "label"}: 201 and the new token, shown this once
    DELETE /tokens/{label}   the token is refused from the next request on, in every process

Adding and revoking are audited (``token.add``, ``token.revoke``) with the label and role,
never the token. See api_stub/management/tokens.py for where the tokens live.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api_stub.management.audit import Errors
from api_stub.management.auth import Principal, Role
from api_stub.management.guard import Admin, Management, acting, token_store_unavailable
from api_stub.management.routes import LABEL, PREFIX
from api_stub.management.tokens import TokenConflict, TokenStoreUnavailable, UnknownToken
from api_stub.problems import CONFLICT, NOT_FOUND, responses
from api_stub.routes import json_response

router = APIRouter(prefix=f"{PREFIX}/tokens", tags=["cache management"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    label: Annotated[str, Field(pattern=LABEL)]

    @field_validator("role")
    @classmethod
    def _a_role(cls, value: str) -> str:
        if value.upper() not in Role.__members__:
            raise ValueError(f"one of {', '.join(r.label for r in Role)}")
        return value.lower()


_ADD_ERRORS: Final[Errors] = {
    TokenConflict: lambda exc: CONFLICT(str(exc)),
    TokenStoreUnavailable: token_store_unavailable,
}
_REVOKE_ERRORS: Final[Errors] = {
    UnknownToken: lambda exc: NOT_FOUND(str(exc)),
    TokenStoreUnavailable: token_store_unavailable,
}


@router.get("", summary="The management tokens, bootstrap and stored")
async def get_tokens(_who: Admin, m: Management) -> Response:
    try:
        return json_response({"tokens": await m.token_store.listed()})
    except TokenStoreUnavailable as exc:
        raise token_store_unavailable(exc) from exc


@router.post(
    "",
    status_code=201,
    summary="Add a token; it works at once in every process",
    responses=responses(CONFLICT),
)
async def post_token(
    m: Management, who: Annotated[Principal, acting(Role.ADMIN, "token.add")], body: TokenRequest
) -> Response:
    arguments = body.model_dump()
    async with m.auditor.action(who, "token.add", arguments, 201, _ADD_ERRORS) as outcome:
        token = await m.token_store.add(Role[body.role.upper()], body.label, who.id)
        outcome.result = arguments
    return json_response(arguments | {"token": token}, 201)


@router.delete(
    "/{label}",
    summary="Revoke a token; refused at once in every process",
    responses=responses(NOT_FOUND),
)
async def delete_token(
    m: Management,
    who: Annotated[Principal, acting(Role.ADMIN, "token.revoke")],
    label: Annotated[str, Path(pattern=LABEL)],
) -> Response:
    async with m.auditor.action(
        who, "token.revoke", {"label": label}, 200, _REVOKE_ERRORS
    ) as outcome:
        revoked = await m.token_store.revoke(label, who.id)
        outcome.result = {"label": label, "role": revoked.role}
    return json_response({"label": label, "role": revoked.role, "revoked_at": revoked.revoked_at})
