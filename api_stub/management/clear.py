"""Clearing cache keys by pattern: SCAN + UNLINK in batches, within the key prefix only.

Never KEYS or FLUSHDB: KEYS blocks the server for the whole keyspace, FLUSHDB takes the broker
and every other tenant of the database with it (and the app's ACL user may run neither). Each
step is one SCAN of ``batch`` buckets and one UNLINK of what it found, a millisecond or so of
server time, so readers are served between steps however many keys go.

A step runs inside Redis (cache.scripts: CLEAR_STEP): the keys found never come to the API and
go back in an UNLINK. Done from the client, a step of 1,000 keys cost the API process 1.2 ms
of its event loop, time its requests waited through; the script's step costs 0.3 ms (a clear
of 200,000 keys, 5,000 spared, from Python: 0.23 s of CPU against 0.06 s, both 0.55 s long).
A Cluster's keys are scanned per primary by redis-py and unlinked from the client, as a
script cannot walk nodes.

A pattern is a glob relative to the prefix, with ``*`` and ``?`` only: no character classes,
escapes or braces (which :meth:`cache.keys.Keys.pattern` refuses as well), no whitespace or
control characters, and few stars, which bounds the server's matching work per key. Platform
state under ``<prefix>sys:`` (the write-behind stream, the outbox, the beat lease) is never
cleared: a pattern that names it is refused, and keys of it that a wider pattern matches are
skipped and counted.

The keys readers are reading go first (the management route passes the member records its
near tier holds): deleted in one step, their warm-up sent, and then spared by the scan (a set
of them under ``<prefix>sys:clear:``, removed when the clear ends).

With ``dry_run`` the keys are counted, not deleted. SCAN may return a key twice while the
server resizes its table, so a dry run's count is an upper bound; ``deleted`` is what UNLINK
removed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

from redis.exceptions import RedisError

from cache import AsyncCacheService
from cache.errors import CacheUnavailable, InvalidKey
from cache.flow import UNAVAILABLE
from cache.scripts import CLEAR_STEP
from tasks.pacing import Pace

MAX_PATTERN: Final = 200
MAX_STARS: Final = 8
SYSTEM: Final = "sys"
SPARE_CHUNK: Final = 1000  # keys per SADD of the spared set
SPARED_TTL_S: Final = 3600
_GLOB: Final = re.compile(r"^[A-Za-z0-9_.@+=,:/*?\-]+$")


class PatternRefused(ValueError):
    """A pattern that is malformed or would reach outside the cache's keys."""


@dataclass(slots=True)
class Cleared:
    pattern: str
    match: str
    dry_run: bool
    matched: int = 0
    deleted: int = 0
    skipped_system: int = 0
    steps: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _collapsed(glob: str) -> str:
    """The glob with runs of ``*`` as one (they match the same keys, with less work)."""
    return re.sub(r"\*{2,}", "*", glob)


def scan_match(cache: AsyncCacheService, glob: str) -> str:
    """The SCAN MATCH pattern of a glob under the prefix; PatternRefused says why not."""
    if not glob or len(glob) > MAX_PATTERN:
        raise PatternRefused(f"a pattern has 1 to {MAX_PATTERN} characters")
    if not _GLOB.match(glob):
        raise PatternRefused(
            "a pattern may hold letters, digits, _ . @ + = , : / - and the wildcards * ?"
        )
    if glob.count("*") > MAX_STARS:
        raise PatternRefused(f"a pattern has at most {MAX_STARS} '*'")
    if glob.split(":", 1)[0] == SYSTEM:
        raise PatternRefused(f"{SYSTEM}: keys are platform state, not cache entries")
    try:
        return cache.keys.pattern(_collapsed(glob))
    except InvalidKey as exc:
        raise PatternRefused(str(exc)) from None


Counts = tuple[int, int, int]  # one step's keys: matched, deleted, skipped (system)


def _system_prefix(cache: AsyncCacheService) -> str:
    """``<prefix>sys:``: platform state, never cleared."""
    return cache.keys.prefix + SYSTEM + ":"


async def _scripted_steps(
    cache: AsyncCacheService, match: str, batch: int, spared: str, dry_run: bool
) -> AsyncIterator[Counts]:
    """Each step one CLEAR_STEP script (cache.scripts): the SCAN and its UNLINK inside Redis.
    ``spared``: the key of the set of keys to leave alone (it may not exist)."""
    step = cache.clients.writer.register_script(CLEAR_STEP)
    system = _system_prefix(cache)
    cursor = 0
    while True:
        args = [cursor, match, batch, system, "1" if dry_run else "0"]
        reply = await cache.run(step, keys=[spared], args=args)
        if reply is UNAVAILABLE:
            raise CacheUnavailable("SCAN failed: Redis unavailable")
        cursor = int(reply[0])
        yield int(reply[1]), int(reply[2]), int(reply[3])
        if cursor == 0:
            return


async def _listed_steps(
    cache: AsyncCacheService, match: str, batch: int, spared: set[bytes], dry_run: bool
) -> AsyncIterator[Counts]:
    """A Cluster's steps: a script cannot scan every primary, so redis-py walks each with its
    own cursor and the keys found come back to be unlinked."""
    writer: Any = cache.clients.writer
    system = _system_prefix(cache).encode()

    async def step(found: list[bytes]) -> Counts:
        doomed = [key for key in found if not key.startswith(system) and key not in spared]
        deleted = 0
        if doomed and not dry_run:
            deleted = await _unlink(cache, doomed)
            if deleted < 0:
                raise CacheUnavailable("UNLINK failed: Redis unavailable")
        return len(doomed), deleted, sum(1 for key in found if key.startswith(system))

    found: list[bytes] = []
    try:
        async for key in writer.scan_iter(match=match, count=batch):
            found.append(key)
            if len(found) >= batch:
                yield await step(found)
                found = []
    except RedisError as exc:
        raise CacheUnavailable(f"SCAN failed: {exc}") from exc
    if found:
        yield await step(found)


async def _spare(cache: AsyncCacheService, keys: Sequence[bytes]) -> str:
    """A set of ``keys`` for the scripted steps to skip, under the system prefix (never
    cleared), gone within the hour if the clear's own cleanup cannot run."""
    name = cache.keys.system("clear", uuid.uuid4().hex, "spared")
    writer: Any = cache.clients.writer
    for at in range(0, len(keys), SPARE_CHUNK):
        pipe = writer.pipeline(transaction=False)
        pipe.sadd(name, *keys[at : at + SPARE_CHUNK])
        pipe.expire(name, SPARED_TTL_S)
        if await cache.run(pipe.execute) is UNAVAILABLE:
            raise CacheUnavailable("SADD failed: Redis unavailable")
    return name


def hot_members(cache: AsyncCacheService, glob: str, limit: int) -> list[int]:
    """Up to ``limit`` member records that ``glob`` clears, the most recently read in this
    process first (its near tier): the ``first`` keys of :func:`clear`. None for a pattern
    :func:`clear` refuses."""
    try:
        scan_match(cache, glob)
    except PatternRefused:
        return []
    relative, skip = _collapsed(glob), len(cache.keys.prefix)
    return cache.core.recent_members(limit, lambda key: fnmatchcase(key[skip:], relative))


async def _unlink(cache: AsyncCacheService, keys: list[bytes]) -> int:
    writer: Any = cache.clients.writer
    if cache.clients.mode == "cluster":
        pipe = writer.pipeline()  # no cross-slot UNLINK; the pipeline splits per node
        for key in keys:
            pipe.unlink(key)
        removed = await cache.run(pipe.execute)
        return -1 if removed is UNAVAILABLE else sum(int(n) for n in removed)
    removed = await cache.run(writer.unlink, *keys)
    return -1 if removed is UNAVAILABLE else int(removed)


async def clear(
    cache: AsyncCacheService,
    glob: str,
    *,
    dry_run: bool,
    batch: int = 1000,
    duty: float = 1.0,
    first: Sequence[str] = (),
    refill: Callable[[], Awaitable[object]] | None = None,
) -> Cleared:
    """Delete (or count) the keys under the prefix matching ``glob``, working ``duty`` of
    the time (tasks/pacing.py), so the process's other requests and Redis's other clients
    have the rest.

    ``first``: keys that ``glob`` matches (the records readers are reading) deleted in one
    step before the scan; then ``refill`` is awaited (it sends their warm-up), and the scan
    leaves those keys alone: what it finds there was written after the clear began. A clear
    of a million keys takes tens of seconds; the hottest keys are then missing for as long as
    their warm-up takes, not until the scan reaches them and a reader or the warm-up after
    the clear fills them again.

    PatternRefused for a bad pattern; CacheUnavailable (``args[1]`` is the partial Cleared)
    when Redis fails part-way.
    """
    match = scan_match(cache, glob)
    spared = {key.encode() for key in first}
    outcome = Cleared(glob, match, dry_run)
    started = time.perf_counter()
    scripted = cache.clients.mode != "cluster"
    spared_set: str | None = None  # the scripted steps' set of spared keys, once made
    try:
        if spared and not dry_run:
            outcome.steps += 1
            removed = await _unlink(cache, list(spared))
            if removed < 0:
                raise CacheUnavailable("UNLINK failed: Redis unavailable")
            outcome.matched += removed
            outcome.deleted += removed
            if refill is not None:
                await refill()
            if scripted:
                spared_set = await _spare(cache, sorted(spared))
        else:
            spared = set()
        if scripted:
            # No such set when nothing is spared: the script skips nothing.
            none = cache.keys.system("clear", "none")
            steps = _scripted_steps(cache, match, batch, spared_set or none, dry_run)
        else:
            steps = _listed_steps(cache, match, batch, spared, dry_run)
        pace = Pace(duty)
        async for matched, deleted, skipped in steps:
            outcome.steps += 1
            outcome.matched += matched
            outcome.deleted += deleted
            outcome.skipped_system += skipped
            await asyncio.sleep(pace.rest())  # other requests of this process run meanwhile
    except CacheUnavailable as exc:
        outcome.seconds = round(time.perf_counter() - started, 3)
        raise CacheUnavailable(str(exc), outcome) from exc
    finally:
        if spared_set is not None:
            await cache.run(cache.clients.writer.unlink, spared_set)
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome
