"""Tag generations: the flows behind CacheCore.generations and CacheCore.bump.

An entry computed from many rows folds the generation of its tags into its key; bumping a tag
(INCR) moves every reader to new keys at once, whatever the number of entries, and the orphans
expire on their own TTL. A generation key that is missing (never set, evicted, or deleted)
starts again at a random 62-bit value, never at one an earlier generation used, so deleting a
generation key is a bump as well: that is how the outbox, whose replay deletes keys, keeps the
bumps that failed while Redis was down.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from cache.ops import UNAVAILABLE, Flow, Pipeline, ReadMany

if TYPE_CHECKING:
    from cache.flow import CacheCore

GENERATION_BITS: Final = 62  # leaves 2**62 INCRs before the signed 64-bit counter overflows


def fresh_generation() -> int:
    """The first value of a generation key: random, so a restart never repeats a generation."""
    return secrets.randbits(GENERATION_BITS)


def read(core: CacheCore, tags: Sequence[str]) -> Flow:
    """The current generation of each tag: one round trip, two when a key must be started.

    Read from the master (a replica behind a bump would serve old entries), or from the near
    tier, which holds them exact as it holds entries (tracked, dropped by every push and by
    this process's own bumps). None when Redis is unavailable: then nothing derived from the
    tags may be read or stored.
    """
    if not tags:
        return ()
    keys = [core.keys.generation(tag) for tag in tags]
    near = core.near if core.enabled else None
    ticket = -1
    if near is not None:
        held = near.generations(keys)
        if held is not None:
            return held
        ticket = near.seq  # before the read: a bump pushed meanwhile refuses what it finds
    raws = yield ReadMany(keys)
    if raws is UNAVAILABLE:
        return None
    if None in raws:
        commands: list[tuple[Any, ...]] = [
            ("SET", key, fresh_generation(), "NX")
            for key, raw in zip(keys, raws, strict=True)
            if raw is None
        ]
        commands += [("GET", key) for key in keys]
        replies = yield Pipeline(commands)
        if replies is UNAVAILABLE:
            return None
        raws = replies[-len(keys) :]
    values = tuple(int(raw) for raw in raws)
    if near is not None:
        near.keep_generations(keys, values, ticket)
    return values


def bump(core: CacheCore, tags: Iterable[str], drop: Collection[str]) -> Flow:
    """Start a new generation of each tag and delete ``drop`` with their leases, in one round
    trip. True when Redis took it; else everything waits in the outbox (see above)."""
    if not core.enabled:
        return False
    gen_keys = [core.keys.generation(tag) for tag in tags]
    if not gen_keys and not drop:
        return True
    commands: list[tuple[Any, ...]] = []
    for key in gen_keys:
        # SET NX first: a missing key must start at a random value, not at INCR's 1.
        commands += [("SET", key, fresh_generation(), "NX"), ("INCR", key)]
    # Own writes: this process reads the new generations at once, never the held ones.
    core.near_drop([*gen_keys, *drop])
    if drop:
        commands.append(("UNLINK", *core.with_leases(drop)))
    if (yield Pipeline(commands)) is UNAVAILABLE:
        core.outbox.add([*gen_keys, *drop])
        return False
    return True
