"""Bearer tokens with roles; only their SHA-256 digests are configured.

Roles are ordered: viewer < operator < admin, each allowed what the ones below it are::

    viewer    health, metrics (JSON, history, Prometheus), reports, dead letters, warm-up state
    operator  warm-up, invalidation, dead-letter replay
    admin     clear, the audit trail

Configuration: ``role:<sha256 hex of the token>[:label]`` entries separated by commas. The
label names the token in the audit trail; without one it is ``<role>-<first 8 hex digits>``
(a digest prefix of a random token tells nothing about the token). Make a token with::

    python -c "import secrets, hashlib; t = secrets.token_urlsafe(32); \\
               print(t, hashlib.sha256(t.encode()).hexdigest())"

A presented token is hashed and compared with every configured digest by
``hmac.compare_digest``, all of them every time, so neither the time taken nor its variation
tells which digest, or how much of one, matched.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

MAX_TOKEN_CHARS: Final = 512  # longer is refused before hashing
_DIGEST: Final = re.compile(r"^[0-9a-f]{64}$")
_LABEL: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")  # also a valid key part (rate limit)


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


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
        """``role:sha256hex[:label],...``; ValueError naming the bad entry (never a digest)."""
        entries: list[_Entry] = []
        seen_digests: set[bytes] = set()
        seen_ids: set[str] = set()
        for number, raw in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
            parts = raw.split(":")
            if len(parts) not in (2, 3):
                raise ValueError(f"token entry {number}: expected role:sha256hex[:label]")
            role_name, digest_hex = parts[0].strip().lower(), parts[1].strip().lower()
            try:
                role = Role[role_name.upper()]
            except KeyError:
                raise ValueError(f"token entry {number}: unknown role {role_name!r}") from None
            if not _DIGEST.match(digest_hex):
                raise ValueError(f"token entry {number}: not a SHA-256 hex digest")
            label = parts[2].strip() if len(parts) == 3 else f"{role.label}-{digest_hex[:8]}"
            if not _LABEL.match(label):
                raise ValueError(f"token entry {number}: label must match {_LABEL.pattern}")
            digest = bytes.fromhex(digest_hex)
            if digest in seen_digests or label in seen_ids:
                raise ValueError(f"token entry {number}: duplicate digest or label")
            seen_digests.add(digest)
            seen_ids.add(label)
            entries.append(_Entry(digest, Principal(label, role)))
        return cls(tuple(entries))

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
