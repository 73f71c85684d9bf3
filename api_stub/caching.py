"""The caching middleware: cached GET routes answered from Redis without running the route.

A route opts in with :func:`cached` (api_stub.rules: the kinds of entry and the config per
data type). A hit costs one Redis round trip for a record or an untagged data entry, two for
a tagged data entry or a response (generations, then the entry), and runs no routing,
dependency or validation code. The entry is read once, by the core's ``fetch``: a miss runs
the route under the key's lease, so one request per key loads while the others wait or are
served the stale value, and the fetch reports HIT, STALE or MISS and how long the value stays
fresh (Cache-Control max-age). Only 200 responses
are stored (and a record route's 404). Every answer of a cached route carries
``X-Cache: HIT | MISS | STALE`` (with ``X-Cache-Tier: near | redis`` on a HIT or STALE:
which tier served it; a near hit sends the body and ETag rendered when it was kept, encoding
nothing), a strong ETag (blake2b of the body: the same in every
process) honoured by If-None-Match with a 304, and Cache-Control with max-age and
stale-while-revalidate. When Redis is unavailable the route runs as if uncached
(``no-cache``).

One recompute of a tagged entry at a time per process, across generations: every member
write bumps the aggregates' and lists' tags, so under steady writes each reader arrives
with a newer generation than the recompute under way, and the key's lease (one per
generation) let each start its own. At 1,000,000 members that was seven copies of the
dashboard's revenue query running at once, 46 s each. A reader that misses while a
recompute of the same variant runs in this process is served that recompute's value when
it is done, as ``X-Cache: STALE`` (it may predate the last write), and nothing is stored
under its newer generation: the next reader after it recomputes.

A kind that declares a lag (cache.kinds: Kind.lag) does not make that reader wait: within
the lag of its last value known current, it is served that value while one recompute runs
behind it (api_stub.lagging), unless the request asks for the current value (no-cache).
A kind kept current (Kind.kept_current: the list pages) also has the variants its readers
read recomputed before their lag runs out, so a reader after a pause does not wait either
(api_stub.keepcurrent).

Cached routes answer JSON: a stored body is sent back as application/json, without the
route's other headers. Documents are rendered with orjson, as the routes render them, so a
hit answers the bytes a miss did.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.convertors import Convertor
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_stub import problems
from api_stub.keepcurrent import KeepCurrent, Reader
from api_stub.lagging import Kept, KeptValues, behind_due, wants_current
from api_stub.rules import CacheRule, cached, rule_of
from cache import NOT_FOUND, AsyncCacheService, Fetched, Outcome
from cache.errors import InvalidKey, LoadDeclined
from cache.loading import Seen

__all__ = ["CacheMiddleware", "CacheRule", "cached", "response_digest", "rule_of"]

logger = logging.getLogger(__name__)

JSON: Final = b"application/json"
PROBLEM_JSON: Final = problems.PROBLEM_JSON.encode()
HIT, MISS, STALE = b"HIT", b"MISS", b"STALE"
_OUTCOME: Final = {Outcome.HIT: HIT, Outcome.STALE: STALE, Outcome.MISS: MISS}
_TIER: Final = {"near": b"near", "redis": b"redis"}
# The scope entry naming the kind a cached route serves (api_stub.management.latency reads it).
KIND_SCOPE: Final = "membership.cache_kind"
# Generations looked back by a lagging kind's first reader in a process (_earlier): a write
# bumps each tag once, so 128 cover the reports' 30-s lag at 4 writes a second.
EARLIER: Final = 128


class _Shared(LoadDeclined):
    """The value of a recompute of the same variant that was under way (an older
    generation's): served as STALE, never stored under the reader's generation. A
    declined load for the counters: neither a miss nor a load error."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


class _RecomputeFailed(LoadDeclined):
    """The recompute a reader shared failed (its own reader got the route's answer)."""


class _Uncacheable(Exception):
    """The route failed (a 5xx): nothing is stored, the answer is sent as it is, and the
    cache counts a load error."""

    def __init__(self, response: _Captured) -> None:
        super().__init__(response.status)
        self.response = response


class _Declined(LoadDeclined):
    """The route refused the client's request (a 4xx): sent as it is, nothing stored, and
    counted apart from errors and misses (a scraper's unknown names are not a sick cache)."""

    def __init__(self, response: _Captured) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(frozen=True, slots=True)
class _Lagging:
    """A reader that may be served its variant's kept value (api_stub.lagging)."""

    variant: tuple[str, str]
    kept: Kept
    lag: float
    started: float


@dataclass(slots=True)
class _Captured:
    status: int = 500
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes = b""


class CacheMiddleware:
    """Pure ASGI: a hit is answered before FastAPI's routing, dependencies and validation.

    ``routes`` are the app's routes (those marked with :func:`cached` are served); a cached
    path must not be shadowed by an earlier GET route of another endpoint.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: Callable[[], AsyncCacheService | None],
        routes: Iterable[BaseRoute],
        max_lag: float = math.inf,
        keep_current: KeepCurrent | None = None,
    ) -> None:
        self.app = app
        self._cache = cache  # late-bound: the lifespan builds the cache after the stack
        self._routes: list[tuple[re.Pattern[str], dict[str, Convertor[Any]], CacheRule]] = []
        self._controls: dict[CacheRule, _Control] = {}
        # Tagged entries' recomputes under way in this process, by variant (not generation).
        self._recomputes: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._max_lag = max_lag
        # The lagging kinds' last values known current (api_stub.lagging), the variants
        # whose recompute runs behind a lagging answer, and those recomputes' tasks.
        self._kept = KeptValues()
        self._behind: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[object]] = set()
        # The variants of kinds kept current for their readers (api_stub.keepcurrent).
        self._keep_current = keep_current if keep_current is not None else KeepCurrent()
        self._keep_current.attach(self._keep_current_cycle)
        for route in routes:
            rule = rule_of(route)
            path = getattr(route, "path", None)
            if rule is not None and path and "GET" in (getattr(route, "methods", None) or ()):
                regex, _format, convertors = compile_path(path)
                self._routes.append((regex, convertors, rule))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        cache = self._cache()
        found = self._match(scope) if cache is not None and cache.enabled else None
        if cache is None or found is None:
            await self.app(scope, receive, send)
            return
        rule, params = found
        scope[KIND_SCOPE] = rule.kind.name
        headers = _request_headers(scope, rule)
        lag = min(rule.kind.lag, self._max_lag)
        # A lagging kind's value is current as of this moment: before its generations' read.
        started = time.monotonic() if lag > 0 else 0.0
        try:
            key, gens = await self._key(cache, scope, rule, params, headers)
        except InvalidKey:  # a path parameter no key can hold
            key, gens = None, ()
        variant = self._variant(scope, rule, params, headers) if lag > 0 else None
        if variant is not None and rule.kind.kept_current > 0:
            self._keep_current.read(variant, rule, scope, params, headers, lag, started)
        first: Fetched | Seen | None = None  # the current entry, when read here already
        if variant is not None and not wants_current(headers):
            kept = self._kept.within(variant, started, lag)
            if kept is None and key is not None and len(gens) == 1:
                # Nothing known within the lag here: a hit is served as ever; only a miss
                # looks back over the earlier generations (one MGET) before loading.
                first = await cache.first(key, rule.data_type)
                if isinstance(first, Seen) and first.entry is None and not first.unavailable:
                    kept = await self._earlier(
                        cache, scope, rule, params, headers, variant, gens[0], started, lag
                    )
            if kept is not None and kept.key != key:  # a change since: lag behind it
                lagging = _Lagging(variant, kept, lag, started)
                if await self._lagging(
                    cache,
                    key,
                    lagging,
                    scope,
                    send,
                    rule,
                    headers,
                    params,
                    missing=first is not None,
                ):
                    return
        if key is None:
            await self._uncached(scope, receive, send, rule, headers)
            return
        await self._serve(
            cache, key, scope, receive, send, rule, headers, params, variant, started, first
        )

    # --- routing -------------------------------------------------------------------------------
    def _match(self, scope: Scope) -> tuple[CacheRule, Mapping[str, Any]] | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for regex, convertors, rule in self._routes:
            found = regex.match(path)
            if found is not None:
                params = {
                    name: convertors[name].convert(value)
                    for name, value in found.groupdict().items()
                }
                return rule, params
        return None

    async def _key(
        self,
        cache: AsyncCacheService,
        scope: Scope,
        rule: CacheRule,
        params: Mapping[str, Any],
        headers: Mapping[bytes, bytes],
    ) -> tuple[str | None, tuple[int, ...]]:
        """The key of the route's entry and the generations in it; None when Redis cannot
        tell the generations."""
        if rule.record is not None:
            return rule.record(cache.keys, params), ()
        found = await cache.generations(rule.tags)
        if found is None:
            return None, ()
        gens = tuple(found)
        return self._entry_keys(cache, scope, rule, params, headers, (gens,))[0], gens

    @staticmethod
    def _entry_keys(
        cache: AsyncCacheService,
        scope: Scope,
        rule: CacheRule,
        params: Mapping[str, Any],
        headers: Mapping[bytes, bytes],
        many: Sequence[tuple[int, ...]],
    ) -> list[str]:
        """A tagged entry's keys under each of ``many`` generations."""
        if rule.entry is not None:
            entry = rule.entry
            return [entry(cache.keys, params, gens) for gens in many]
        return [cache.keys.http(d) for d in response_digests(scope, rule, headers, many)]

    # --- serving -------------------------------------------------------------------------------
    async def _serve(
        self,
        cache: AsyncCacheService,
        key: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        rule: CacheRule,
        headers: Mapping[bytes, bytes],
        params: Mapping[str, Any],
        variant: tuple[str, str] | None,
        started: float,
        first: Fetched | Seen | None = None,
    ) -> None:
        """``first``: the entry's first read, when the caller made it (a lagging kind's)."""
        load = self._loader(scope, receive, rule, params, headers, variant)
        try:
            # One read decides: a hit never runs the route; a miss runs it under the key's
            # lease, and the fetch says how the answer was served.
            fetched = await cache.fetch(
                key,
                load,
                rule.data_type,
                version_of=_version if rule.record else None,
                first=first,
            )
        except (_Uncacheable, _Declined) as passed:
            await _replay(send, passed.response)
            return
        except _Shared as shared:
            fetched = Fetched(shared.value, Outcome.STALE, 0.0)
        except _RecomputeFailed:  # the recompute shared failed: this reader runs the route
            await self._uncached(scope, receive, send, rule, headers)
            return
        else:
            if variant is not None:  # current under the generations read at ``started``
                self._kept.keep(variant, key, fetched.value, started)
        await _send(send, *self._render(cache, rule, headers, fetched, scope["path"]))

    def _loader(
        self,
        scope: Scope,
        receive: Receive,
        rule: CacheRule,
        params: Mapping[str, Any],
        headers: Mapping[bytes, bytes],
        variant: tuple[str, str] | None = None,
    ) -> Callable[[], Awaitable[Any]]:
        """The fetch's loader: runs the route; a tagged entry's, one per variant at a time
        (``variant``: the caller's, when it computed it already)."""

        async def run_route() -> Any:
            response = await _capture(self.app, scope, receive)
            if response.status == 200:
                return response.body if rule.stores_body else orjson.loads(response.body)
            if response.status == 404 and rule.record is not None:
                return NOT_FOUND
            if 400 <= response.status < 500:
                raise _Declined(response)
            raise _Uncacheable(response)

        async def load() -> Any:
            if not rule.tags:  # a record or an untagged entry: its key names one version
                return await run_route()
            which = variant if variant is not None else self._variant(scope, rule, params, headers)
            running = self._recomputes.get(which)
            if running is not None:
                raise _Shared(await asyncio.shield(running))
            mine = self._recomputes[which] = asyncio.get_running_loop().create_future()
            try:
                value = await run_route()
            except BaseException:
                # The readers sharing it run the route themselves (see _serve).
                mine.set_exception(_RecomputeFailed())
                mine.exception()  # retrieved: nobody may be waiting
                raise
            else:
                mine.set_result(value)
                return value
            finally:
                if self._recomputes.get(which) is mine:
                    del self._recomputes[which]

        return load

    # --- lagging behind a change (api_stub.lagging) ---------------------------------------------
    async def _lagging(
        self,
        cache: AsyncCacheService,
        key: str | None,
        lagging: _Lagging,
        scope: Scope,
        send: Send,
        rule: CacheRule,
        headers: Mapping[bytes, bytes],
        params: Mapping[str, Any],
        missing: bool = False,
    ) -> bool:
        """Answer with the kept value, unless a current one is cached; True when answered.
        ``key``: the entry's under the current generations (None: Redis is away);
        ``missing``: the caller read it and found nothing.

        The current key is read first: another process, a warm-up or this one's recompute
        may have stored it. When it is missing, the kept value is served, and once it is
        older than half the lag one recompute starts behind the answer."""
        kept, started = lagging.kept, lagging.started
        if key is not None:
            current = None if missing else await cache.peek(key, rule.data_type)
            if current is not None:
                self._kept.keep(lagging.variant, key, current.value, started)
                await _send(send, *self._render(cache, rule, headers, current, scope["path"]))
                return True
            if behind_due(kept, started, lagging.lag):
                self._recompute_behind(cache, key, scope, rule, headers, params, lagging)
        cache.count_stale(rule.data_type)
        # Never fresh for clients: max-age=0 while cached, no-cache with Redis away.
        stale = Fetched(kept.value, Outcome.STALE, 0.0 if key is not None else None, "near")
        status, head, body = self._render(cache, rule, headers, stale, scope["path"])
        head.append((b"age", b"%d" % int(started - kept.confirmed)))
        await _send(send, status, head, body)
        return True

    async def _earlier(
        self,
        cache: AsyncCacheService,
        scope: Scope,
        rule: CacheRule,
        params: Mapping[str, Any],
        headers: Mapping[bytes, bytes],
        variant: tuple[str, str],
        generation: int,
        started: float,
        lag: float,
    ) -> Kept | None:
        """The newest value stored under one of the last ``EARLIER`` generations of the
        kind's tag, kept when it was current within the lag (one MGET): the first reader of a
        lagging kind in a process (after a restart or a deploy, while writes go on) is served
        it while the recompute runs behind, instead of waiting for that recompute (3.6 s for
        the dashboard at 1,000,000 members). Asked only once the current entry is found
        missing, before the fetch would take its lease: a hit costs nothing more, and a
        reader does not wait on another process's lease while an earlier value would do.

        A value was current when its computation began: its envelope's ``created_at`` less
        its ``compute_time``. A value that does not say how long it took (a warm-up's) is
        taken as half the lag older, longer than any recompute a lag allows (see
        api_stub.lagging)."""
        older = range(generation - 1, max(generation - EARLIER, 0) - 1, -1)  # newest first
        keys = self._entry_keys(cache, scope, rule, params, headers, [(g,) for g in older])
        if not keys:
            return None
        now = time.time()
        for key, entry in zip(keys, await cache.entries(keys), strict=True):
            if entry is None:
                continue
            took = entry.compute_time if entry.compute_time > 0 else lag / 2
            age = max(now - (entry.created_at - took), 0.0)
            if age > lag:
                return None  # the newest earlier value is too old: the others are older
            self._kept.keep(variant, key, entry.value, started - age)
            return self._kept.within(variant, started, lag)
        return None

    def _recompute_behind(
        self,
        cache: AsyncCacheService,
        key: str,
        scope: Scope,
        rule: CacheRule,
        headers: Mapping[bytes, bytes],
        params: Mapping[str, Any],
        lagging: _Lagging,
    ) -> None:
        """One recompute of the variant at a time, run after the lagging answer is sent."""
        variant = lagging.variant
        if variant in self._behind:
            return
        self._behind.add(variant)
        task = asyncio.get_running_loop().create_task(
            self._recompute(cache, key, scope, rule, headers, params, variant, lagging.started)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recompute(
        self,
        cache: AsyncCacheService,
        key: str,
        scope: Scope,
        rule: CacheRule,
        headers: Mapping[bytes, bytes],
        params: Mapping[str, Any],
        variant: tuple[str, str],
        started: float,
    ) -> bool:
        """Run the route for ``variant`` (marked in ``_behind`` by the caller, cleared here):
        its value is stored under ``key`` (as a miss's would be) and kept, confirmed at
        ``started``. False when the route failed."""
        load = self._loader(dict(scope), _no_body, rule, params, headers, variant)
        try:
            fetched = await cache.fetch(key, load, rule.data_type)
        except _Shared:  # a reader's own recompute was under way: it keeps its value
            return True
        except Exception:  # the next reader past the lag runs the route itself
            logger.warning("recompute of %s failed", rule.kind.name, exc_info=True)
            return False
        finally:
            self._behind.discard(variant)
        self._kept.keep(variant, key, fetched.value, started)
        return True

    async def _keep_current_cycle(self, recent: Iterable[tuple[Any, Reader]]) -> None:
        """One cycle of api_stub.keepcurrent: recompute, in one database session, each recently
        read variant whose value is half its lag old and retired by a change since."""
        cache = self._cache()
        started = time.monotonic()  # current as of now: before the generations' read
        due: list[tuple[tuple[str, str], Reader]] = []
        for variant, reader in recent:
            kept = self._kept.get(variant)
            fresh = kept is not None and not behind_due(kept, started, reader.lag)
            if not fresh and variant not in self._behind and variant not in self._recomputes:
                due.append((variant, reader))
        if cache is None or not cache.enabled or not due:
            return
        gens_of: dict[tuple[str, ...], tuple[int, ...] | None] = {}
        for _variant, reader in due:
            tags = reader.rule.tags
            if tags not in gens_of:
                found = await cache.generations(tags)
                gens_of[tags] = None if found is None else tuple(found)
        async with self._keep_current.batch():
            for variant, reader in due:
                gens = gens_of[reader.rule.tags]
                if gens is None:  # Redis is away: readers are served within the lag
                    continue
                rule, scope, params = reader.rule, reader.scope, reader.params
                key = self._entry_keys(cache, scope, rule, params, reader.headers, (gens,))[0]
                kept = self._kept.get(variant)
                if kept is not None and kept.key == key:  # no change since: still current
                    self._kept.keep(variant, key, kept.value, started)
                    continue
                if variant in self._behind:  # a reader's recompute began meanwhile
                    continue
                self._behind.add(variant)
                if not await self._recompute(
                    cache, key, scope, rule, reader.headers, params, variant, started
                ):
                    return  # the database or the route is failing: readers will retry

    @staticmethod
    def _variant(
        scope: Scope, rule: CacheRule, params: Mapping[str, Any], headers: Mapping[bytes, bytes]
    ) -> tuple[str, str]:
        """What a tagged entry is across generations (its key without them); computed on a
        miss only."""
        if rule.entry is not None:
            return rule.kind.name, repr(sorted(params.items()))
        return rule.kind.name, response_digest(scope, rule, headers, ())

    async def _uncached(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rule: CacheRule,
        headers: Mapping[bytes, bytes],
    ) -> None:
        response = await _capture(self.app, scope, receive)
        if response.status != 200:
            await _replay(send, response)
            return
        etag = _etag(response.body)
        extra = [(b"etag", etag), (b"cache-control", b"no-cache"), (b"x-cache", MISS)]
        extra += _vary(rule)
        if _not_modified(headers, etag):
            await _send(send, 304, extra, b"")
        else:
            await _send(send, 200, _json_headers(response.body) + extra, response.body)

    def _render(
        self,
        cache: AsyncCacheService,
        rule: CacheRule,
        headers: Mapping[bytes, bytes],
        fetched: Fetched,
        path: str,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of the answer for what the cache served."""
        value, outcome = fetched.value, _OUTCOME[fetched.outcome]
        tier = [(b"x-cache-tier", _TIER[fetched.tier])] if outcome is not MISS else []
        if value is NOT_FOUND:
            # Never kept by clients: the member may be created the next moment. The body is
            # the route's own (problems.NOT_FOUND with its default detail).
            extra = [(b"cache-control", b"no-cache"), (b"x-cache", outcome), *tier]
            cause = problems.NOT_FOUND
            missing = problems.render(404, cause.description, path, cause=cause)
            head = [(b"content-type", PROBLEM_JSON), (b"content-length", b"%d" % len(missing))]
            return 404, head + extra, missing
        node = fetched.node
        if node is not None and node.rendered is not None:  # a near hit: nothing to encode
            body, etag = node.rendered
        else:
            body = value if isinstance(value, bytes) else orjson.dumps(value)
            etag = _etag(body)
            if node is not None:
                cache.keep_rendered(fetched, body, etag)
        control = self._controls.get(rule)
        if control is None:
            control = self._controls[rule] = _control(cache, rule)
        if fetched.fresh_for is None:  # not in the cache (Redis unavailable): nor in clients
            cache_control = b"no-cache"
        else:
            cache_control = b"%s%d%s" % (control.head, int(fetched.fresh_for), control.tail)
        extra = [
            (b"etag", etag),
            (b"cache-control", cache_control),
            (b"x-cache", outcome),
            *tier,
            *control.vary,
        ]
        if _not_modified(headers, etag):
            return 304, extra, b""
        return 200, _json_headers(body) + extra, body


@dataclass(frozen=True, slots=True)
class _Control:
    """The constant parts of a rule's Cache-Control (and Vary) header."""

    head: bytes  # b"public, max-age="
    tail: bytes  # b", stale-while-revalidate=<window>"
    vary: tuple[tuple[bytes, bytes], ...]


def _control(cache: AsyncCacheService, rule: CacheRule) -> _Control:
    visibility = b"private" if rule.private else b"public"
    window = cache.policy.stale_window(rule.data_type)
    return _Control(
        head=visibility + b", max-age=",
        tail=b", stale-while-revalidate=%d" % window,
        vary=tuple(_vary(rule)),
    )


# --- helpers ---------------------------------------------------------------------------------
def response_digest(
    scope: Scope, rule: CacheRule, headers: Mapping[bytes, bytes], gens: Sequence[int]
) -> str:
    """What identifies a response: method, path, sorted query, Vary values, generations."""
    return response_digests(scope, rule, headers, (gens,))[0]


def response_digests(
    scope: Scope,
    rule: CacheRule,
    headers: Mapping[bytes, bytes],
    many: Iterable[Sequence[int]],
) -> list[str]:
    """:func:`response_digest` under each of ``many`` generations, the request read once
    (a lagging reader's look back over 128 generations took 3.9 ms parsing it 128 times)."""
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    # Sort by name only: repeated parameters keep their order, which may carry meaning.
    query = urlencode(sorted(pairs, key=lambda pair: pair[0]))
    vary = [headers.get(name, b"").decode("latin-1") for name in rule.vary]
    request = [scope["method"], scope["path"], query, vary]
    return [
        blake2b(orjson.dumps([*request, list(gens)]), digest_size=16).hexdigest() for gens in many
    ]


def _request_headers(scope: Scope, rule: CacheRule) -> dict[bytes, bytes]:
    """The request headers the cache reads: If-None-Match, Cache-Control, the Vary names."""
    wanted = (b"if-none-match", b"cache-control", *rule.vary)
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in wanted:
            found[name] = found[name] + b"," + value if name in found else value
    return found


def _etag(body: bytes) -> bytes:
    return b'"' + blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def _not_modified(headers: Mapping[bytes, bytes], etag: bytes) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    condition = headers.get(b"if-none-match")
    if condition is None:
        return False
    if condition.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in condition.split(b","))


def _version(value: Any) -> int:
    return int(value.get("version", 0)) if isinstance(value, dict) else 0


def _vary(rule: CacheRule) -> list[tuple[bytes, bytes]]:
    return [(b"vary", b", ".join(rule.vary))] if rule.vary else []


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _no_body() -> Message:
    """The request body of a recompute run after its reader was answered: a GET has none."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> _Captured:
    """Run the route and keep its response instead of sending it."""
    captured = _Captured()
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    captured.body = b"".join(chunks)
    return captured


async def _replay(send: Send, response: _Captured) -> None:
    headers = [
        (name, value) for name, value in response.headers or [] if name.lower() != b"x-cache"
    ]
    await _send(send, response.status, [*headers, (b"x-cache", MISS)], response.body)
