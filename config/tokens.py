"""The grammar of MANAGEMENT_TOKENS: ``role:<sha256 hex>[:label]`` entries, comma-separated.

Parsed here, by the settings loader, so a bad entry stops every process at start-up with one
line naming the variable; the management API builds its token table from the same entries
(api_stub.management.auth). Roles are ordered: viewer < operator < admin.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

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
class TokenEntry:
    """One configured token: its digest, its label (the audit trail's name) and its role."""

    digest: bytes
    label: str
    role: Role


def parse_tokens(text: str) -> tuple[TokenEntry, ...]:
    """``role:sha256hex[:label],...``; ValueError naming the bad entry (never a digest).

    Without a label an entry is ``<role>-<first 8 hex digits>`` (a digest prefix of a random
    token tells nothing about the token)."""
    entries: list[TokenEntry] = []
    seen_digests: set[bytes] = set()
    seen_labels: set[str] = set()
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
        if digest in seen_digests:
            raise ValueError(f"token entry {number}: the digest of an earlier entry again")
        if label in seen_labels:
            raise ValueError(f"token entry {number}: label {label!r} is used twice")
        seen_digests.add(digest)
        seen_labels.add(label)
        entries.append(TokenEntry(digest, label, role))
    return tuple(entries)
