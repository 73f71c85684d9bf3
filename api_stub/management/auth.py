"""Bearer tokens with roles; only their SHA-256 digests are configured.

Roles are ordered: viewer < operator < admin, each allowed what the ones below it are::

    viewer    health, metrics (JSON, history, Prometheus), reports, dead letters, warm-up state
    operator  warm-up, invalidation, dead-letter replay
    admin     clear, the audit trail

Configuration: ``role:<sha256 hex of the token>[:label]`` entries separated by commas (the
grammar is config.tokens', checked when the settings load). The label names the token in the
audit trail; without one it is ``<role>-<first 8 hex digits>``. Make a token with::

    python -c "import secrets, hashlib; t = secrets.token_urlsafe(32); \\
               print(t, hashlib.sha256(t.encode()).hexdigest())"

A presented token is hashed and compared with every configured digest by
``hmac.compare_digest``, all of them every time, so neither the time taken nor its variation
tells which digest, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from config.tokens import Role, parse_tokens

MAX_TOKEN_CHARS: Final = 512  # longer is refused before hashing


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id (label) and role."""

    id: str
    role: Role


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class TokenTable:
    """The configured tokens; ``authenticate`` maps a presented token to its Principal."""

    def __init__(self, entries: tuple[_Entry, ...] = ()) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str) -> TokenTable:
        """``role:sha256hex[:label],...`` (config.tokens); ValueError naming the bad entry."""
        return cls(tuple(_Entry(e.digest, Principal(e.label, e.role)) for e in parse_tokens(text)))

    def principals(self) -> dict[str, tuple[str, Role]]:
        """label -> (sha256 hex digest, role) of every configured token."""
        return {e.principal.id: (e.digest.hex(), e.principal.role) for e in self._entries}

    def authenticate(self, token: str | None) -> Principal | None:
        """The Principal of a presented token, or None."""
        presented = presented_digest(token)
        if presented is None:
            return None
        found: Principal | None = None
        for entry in self._entries:  # no early exit: every digest is compared every time
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


def presented_digest(token: str | None) -> bytes | None:
    """The SHA-256 of a presented token; None for an empty or oversized one."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def hash_token(token: str) -> str:
    """The hex digest to configure for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


__all__ = ["MAX_TOKEN_CHARS", "Principal", "Role", "TokenTable", "hash_token"]
