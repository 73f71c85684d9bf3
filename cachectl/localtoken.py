"""The admin management token of the local stack (``cachectl up`` with no MANAGEMENT_TOKENS).

``up`` mints one the first time and keeps it in ``<workdir>/management-token`` (mode 600,
beside the stack's other runtime files); later runs reuse it. The API it starts is given its
SHA-256 digest as MANAGEMENT_TOKENS (only digests are ever configured), and cachectl's API
commands read the file when no token is given for the local API.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Final

WORKDIR: Final = Path("var")  # up's runtime files, relative to the working directory
FILE_NAME: Final = "management-token"
LABEL: Final = "local-admin"  # the token's name in the audit trail


def path(workdir: Path = WORKDIR) -> Path:
    return workdir / FILE_NAME


def read(workdir: Path = WORKDIR) -> str | None:
    """The kept token, or None when there is none (or it cannot be read)."""
    try:
        token = path(workdir).read_text().strip()
    except OSError:
        return None
    return token or None


def load_or_mint(workdir: Path = WORKDIR) -> tuple[str, bool]:
    """(token, minted): the kept token, else a new one written with mode 600."""
    kept = read(workdir)
    if kept is not None:
        os.chmod(path(workdir), 0o600)  # a copy restored or edited keeps to its owner
        return kept, False
    token = secrets.token_urlsafe(32)
    workdir.mkdir(parents=True, exist_ok=True)
    target = path(workdir)
    # Created with its mode, never readable by others even for a moment; O_EXCL: two
    # starts racing keep one token (the loser reads the winner's).
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        kept = read(workdir)
        if kept is None:
            raise
        return kept, False
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    with contextlib.suppress(OSError):
        os.chmod(target, 0o600)  # whatever the umask did
    return token, True


def configured(token: str) -> str:
    """The MANAGEMENT_TOKENS entry of ``token``: admin, its digest, its label."""
    from api_stub.management.auth import hash_token

    return f"admin:{hash_token(token)}:{LABEL}"
