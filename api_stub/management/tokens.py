"""Management tokens added and revoked at run time, with no restart.

MANAGEMENT_TOKENS stays the bootstrap set (the break-glass tokens a deploy writes); the
tokens made afterwards live in one hash of the durable Redis role,
``<prefix>sys:mgmt:tokens``, which every API process reads::

    d:<sha256 hex>   {"label", "role", "added_at", "added_by", "revoked_at"?, "revoked_by"?}
    l:<label>        <sha256 hex>       (labels are unique; a revoked label stays taken)

Every authentication reads the presented digest's field (one HGET), so an added token works
and a revoked one is refused in every process from the next request after the answer to
``add``/``revoke``: the bound is zero, no cache to expire. A bootstrap token is revoked by a
``d:`` entry with ``revoked_at``: that digest stays refused, and a new bootstrap token takes a
new MANAGEMENT_TOKENS entry (and a restart).

Without Redis, bootstrap tokens still work (an operator must be able to reach a broken
platform; a revocation of one cannot be read then), and a token of the store gets 503, never
a wrong answer. Only digests are stored; the token itself is shown once, to whoever added it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Final

from redis.exceptions import RedisError

from api_stub.management.auth import Principal, Role, TokenTable, presented_digest
from cache.client import AsyncRedis
from cache.keys import Keys

log = logging.getLogger("api_stub.management.tokens")

TOKEN_BYTES: Final = 32  # 256 bits of randomness, urlsafe base64: 43 characters


class TokenStoreUnavailable(Exception):
    """The durable Redis did not answer: a token of the store cannot be checked."""


class TokenConflict(Exception):
    """The label is taken (by a bootstrap token or an earlier one of the store)."""


class UnknownToken(Exception):
    """No token has this label."""


@dataclass(frozen=True)
class StoredToken:
    label: str
    role: str
    added_at: str
    added_by: str
    revoked_at: str | None = None
    revoked_by: str | None = None

    @classmethod
    def parse(cls, raw: bytes | str) -> StoredToken:
        fields: dict[str, Any] = json.loads(raw)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})

    def dump(self) -> str:
        return json.dumps(asdict(self))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TokenStore:
    """The bootstrap table plus the tokens of the durable Redis, as one authenticator."""

    def __init__(self, bootstrap: TokenTable, redis: AsyncRedis, keys: Keys) -> None:
        self.bootstrap = bootstrap
        self.redis = redis
        self.key = keys.system("mgmt", "tokens")

    async def authenticate(self, token: str | None) -> Principal | None:
        """The caller's Principal, None for an unknown or revoked token; raises
        TokenStoreUnavailable when only the store could say."""
        digest = presented_digest(token)
        if digest is None:
            return None
        booted = self.bootstrap.authenticate(token)
        try:
            raw = await self.redis.hget(self.key, f"d:{digest.hex()}")
        except RedisError as exc:
            if booted is not None:
                return booted
            raise TokenStoreUnavailable(str(exc)) from exc
        if raw is None:
            return booted
        stored = StoredToken.parse(raw)
        if stored.revoked_at is not None:
            return None
        return Principal(stored.label, Role[stored.role.upper()])

    async def add(self, role: Role, label: str, by: str) -> str:
        """A new token of ``role`` named ``label``; the token, shown to nobody else."""
        if label in self.bootstrap.principals():
            raise TokenConflict(f"label {label!r} is a bootstrap token's")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        digest = presented_digest(token)
        assert digest is not None  # a fresh token is never empty nor oversized
        entry = StoredToken(label, role.label, _now(), by)
        try:
            if not await self.redis.hsetnx(self.key, f"l:{label}", digest.hex()):
                raise TokenConflict(f"label {label!r} is taken")
            await self.redis.hset(self.key, f"d:{digest.hex()}", entry.dump())
        except RedisError as exc:
            raise TokenStoreUnavailable(str(exc)) from exc
        log.info("management token %s (%s) added by %s", label, role.label, by)
        return token

    async def revoke(self, label: str, by: str) -> StoredToken:
        """Refuse the token named ``label`` from now on, in every process."""
        booted = self.bootstrap.principals().get(label)
        try:
            if booted is not None:
                digest, role = booted
                await self.redis.hsetnx(self.key, f"l:{label}", digest)
                current = StoredToken(label, role.label, "bootstrap", "MANAGEMENT_TOKENS")
            else:
                found = await self.redis.hget(self.key, f"l:{label}")
                if found is None:
                    raise UnknownToken(f"no token labelled {label!r}")
                digest = _text(found)
                raw = await self.redis.hget(self.key, f"d:{digest}")
                if raw is None:
                    raise UnknownToken(f"no token labelled {label!r}")
                current = StoredToken.parse(raw)
            if current.revoked_at is None:
                revoked = {"revoked_at": _now(), "revoked_by": by}
                current = StoredToken(**(asdict(current) | revoked))
                await self.redis.hset(self.key, f"d:{digest}", current.dump())
        except RedisError as exc:
            raise TokenStoreUnavailable(str(exc)) from exc
        log.info("management token %s revoked by %s", label, by)
        return current

    async def listed(self) -> list[dict[str, Any]]:
        """Every token, bootstrap and stored, by label: role, source, when added and revoked."""
        try:
            fields: dict[Any, Any] = await self.redis.hgetall(self.key)
        except RedisError as exc:
            raise TokenStoreUnavailable(str(exc)) from exc
        stored = [
            StoredToken.parse(value) for name, value in fields.items() if _text(name)[:2] == "d:"
        ]
        by_label = {token.label: asdict(token) | {"source": "store"} for token in stored}
        for label, (_digest, role) in self.bootstrap.principals().items():
            shown = by_label.get(label, {"added_at": None, "added_by": None, "revoked_at": None})
            by_label[label] = shown | {"label": label, "role": role.label, "source": "bootstrap"}
        return sorted(by_label.values(), key=lambda token: str(token["label"]))
