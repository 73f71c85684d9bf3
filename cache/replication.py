"""The replicas a master lists in its INFO replication section (``slave0``, ``slave1``, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def replica_entries(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each replica's fields (ip, port, state, offset, lag), in the order INFO numbers them.

    Parsed INFO also holds scalars named slave_* on a replica (slave_read_only, ...): only
    ``slave<N>`` entries with fields are replicas.
    """
    return [
        value
        for name, value in sorted(info.items())
        if name.startswith("slave") and name[5:].isdigit() and isinstance(value, dict)
    ]
