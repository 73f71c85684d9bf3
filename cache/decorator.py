"""``@region.cached(kind)``: cache a function's result under a kind of the registry.

Modelled on dogpile.cache's regions (``cache_on_arguments``) and cashews' ``@cache``::

    region = CacheRegion()                      # module level: nothing connects at import

    @region.cached("growth")                    # a kind of cache/kinds.py
    def member_growth(session: Session) -> dict[str, Any]: ...

    @region.cached("lookup", key=lambda name, **_: (name,))
    async def lookup(name: str) -> list[dict[str, Any]]: ...

    region.bind(build_cache(settings), build_async_cache(settings))   # at process start-up

A call runs the core's single-flight fetch (cache/loading.py): one loader per key across
processes under a lease, early refresh, stale serving while one caller refreshes, and, with
``version_of`` (or a record kind, whose dicts carry ``version``), the version guard. The kind
gives the data type (TTL, metrics), the key (:meth:`cache.kinds.Kind.key`) and the tags: their
current generations are folded into the key, so a ``bump`` of a tag retires every entry of the
kind, as it does the API's.

``key`` maps the call's arguments to the kind's params (a sequence in order, or a mapping by
name); without it, the function's own arguments of those names are taken. Values must be JSON
(or bytes), as everywhere in the cache.

Fail-open: an unbound region, CACHE_ENABLED=false, Redis unavailable or an argument no key can
hold all make the function just run. Sync functions need a sync front (CacheService), async
ones an async front (AsyncCacheService): a region bound without the one a call needs raises
RegionError, since that is a start-up mistake rather than an outage.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast

from cache.aio import AsyncCacheService
from cache.errors import InvalidKey, RegionError
from cache.flow import VersionOf
from cache.kinds import KINDS, Kind, Registry, Storage
from cache.service import CacheService

log = logging.getLogger("cache")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
KeyOf = Callable[..., Sequence[Any] | Mapping[str, Any]]


class CachedFunction(Protocol[P, R_co]):
    """A function wrapped by :meth:`CacheRegion.cached`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    # Delete the entry the same arguments would read (bool; awaitable for async functions).
    invalidate: Callable[..., Any]
    kind: Kind


def record_version(value: Any) -> int:
    """A record's version: the ``version`` field of its dict (0 for anything else)."""
    return int(value.get("version", 0)) if isinstance(value, dict) else 0


class CacheRegion:
    """Where cached functions find the cache of this process: bound at start-up, not import."""

    def __init__(self, kinds: Registry = KINDS) -> None:
        self.kinds = kinds
        self._sync: CacheService | None = None
        self._async: AsyncCacheService | None = None
        self._bound = False

    def bind(self, *fronts: CacheService | AsyncCacheService) -> None:
        """Use these fronts from now on (one of each kind at most), replacing earlier ones."""
        sync = [front for front in fronts if isinstance(front, CacheService)]
        aio = [front for front in fronts if isinstance(front, AsyncCacheService)]
        if len(sync) > 1 or len(aio) > 1 or len(sync) + len(aio) != len(fronts):
            raise TypeError("bind() takes at most one CacheService and one AsyncCacheService")
        self._sync = sync[0] if sync else None
        self._async = aio[0] if aio else None
        self._bound = bool(fronts)

    def unbind(self) -> None:
        """Back to running every function uncached (process shutdown, tests)."""
        self._sync = self._async = None
        self._bound = False

    def sync_front(self, caller: str) -> CacheService | None:
        """The sync front; None when the region is unbound (the caller then runs uncached)."""
        if self._sync is None and self._bound:
            raise _front_error(caller, "a sync front (CacheService)")
        return self._sync

    def async_front(self, caller: str) -> AsyncCacheService | None:
        """The async front; None when the region is unbound (the caller then runs uncached)."""
        if self._async is None and self._bound:
            raise _front_error(caller, "an async front (AsyncCacheService)")
        return self._async

    def cached(
        self,
        kind: str,
        *,
        key: KeyOf | None = None,
        ttl: float | None = None,
        version_of: VersionOf | None = None,
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
        """Cache the decorated function under ``kind`` (a name of the registry)."""
        declared = self.kinds[kind]
        if declared.storage is Storage.RESPONSE:
            raise ValueError(f"{kind}: a response kind is keyed by the HTTP request, not a call")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"{kind}: ttl must be positive, not {ttl}")
        if version_of is None and declared.storage is Storage.RECORD:
            version_of = record_version

        def decorate(fn: Callable[P, R]) -> CachedFunction[P, R]:
            binding = _Binding(self, declared, fn, key, ttl, version_of)
            wrapper = binding.async_wrapper() if inspect.iscoroutinefunction(fn) else None
            wrapper = wrapper or binding.sync_wrapper()
            return cast(CachedFunction[P, R], wrapper)

        return decorate


def _front_error(caller: str, needed: str) -> RegionError:
    return RegionError(
        f"{caller} needs {needed}, but its region was bound without one: "
        "region.bind(sync_front, async_front) at start-up takes both"
    )


class _Binding(Generic[P, R]):
    """One decorated function: how its arguments become a key, and its two wrappers."""

    def __init__(
        self,
        region: CacheRegion,
        kind: Kind,
        fn: Callable[P, R],
        key: KeyOf | None,
        ttl: float | None,
        version_of: VersionOf | None,
    ) -> None:
        self.region, self.kind, self.fn = region, kind, fn
        self.ttl, self.version_of = ttl, version_of
        self.name = getattr(fn, "__qualname__", repr(fn))
        if key is None:
            self.key_of = self._by_signature(fn)
        else:
            self.key_of = key

    def _by_signature(self, fn: Callable[..., Any]) -> KeyOf:
        """Without ``key=``: the function's own arguments named like the kind's params."""
        signature = inspect.signature(fn)
        missing = [name for name in self.kind.params if name not in signature.parameters]
        if missing:
            raise ValueError(
                f"{self.name}: kind {self.kind.name!r} takes {self.kind.params}; "
                f"the function has no argument {missing}: pass key=lambda ...: (...)"
            )
        params = self.kind.params

        def key_of(*args: Any, **kwargs: Any) -> Mapping[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return {name: bound.arguments[name] for name in params}

        return key_of

    def _key(
        self, front: CacheService | AsyncCacheService, gens: Sequence[int], args: Any, kwargs: Any
    ) -> str | None:
        """The entry's key; None for arguments no key can hold (the call runs uncached)."""
        params = self.key_of(*args, **kwargs)
        try:
            return self.kind.key(front.keys, params, gens)
        except InvalidKey as exc:
            log.debug("%s runs uncached: %s", self.name, exc)
            return None

    def sync_wrapper(self) -> Callable[..., Any]:
        fn, kind = self.fn, self.kind

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            front = self.region.sync_front(self.name)
            if front is None or not front.enabled:
                return fn(*args, **kwargs)
            gens = front.generations(kind.tags)
            entry = None if gens is None else self._key(front, gens, args, kwargs)
            if entry is None:  # Redis unavailable, or no key for these arguments
                return fn(*args, **kwargs)
            return front.get_or_load(
                entry,
                lambda: fn(*args, **kwargs),
                kind.data_type,
                ttl=self.ttl,
                version_of=self.version_of,
            )

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            front = self.region.sync_front(self.name)
            if front is None or not front.enabled:
                return False
            gens = front.generations(kind.tags)
            entry = None if gens is None else self._key(front, gens, args, kwargs)
            return entry is not None and front.delete(entry) > 0

        setattr(wrapper, "invalidate", invalidate)  # noqa: B010 - a function attribute
        setattr(wrapper, "kind", kind)  # noqa: B010
        return wrapper

    def async_wrapper(self) -> Callable[..., Awaitable[Any]]:
        fn = cast(Callable[..., Awaitable[Any]], self.fn)
        kind = self.kind

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            front = self.region.async_front(self.name)
            if front is None or not front.enabled:
                return await fn(*args, **kwargs)
            gens = await front.generations(kind.tags)
            entry = None if gens is None else self._key(front, gens, args, kwargs)
            if entry is None:
                return await fn(*args, **kwargs)
            return await front.get_or_load(
                entry,
                lambda: fn(*args, **kwargs),
                kind.data_type,
                ttl=self.ttl,
                version_of=self.version_of,
            )

        async def invalidate(*args: Any, **kwargs: Any) -> bool:
            front = self.region.async_front(self.name)
            if front is None or not front.enabled:
                return False
            gens = await front.generations(kind.tags)
            entry = None if gens is None else self._key(front, gens, args, kwargs)
            return entry is not None and await front.delete(entry) > 0

        setattr(wrapper, "invalidate", invalidate)  # noqa: B010
        setattr(wrapper, "kind", kind)  # noqa: B010
        return wrapper
