"""The cache core: keys, envelope codec, TTL policy, breaker, metrics, sync and async fronts.

It imports nothing from db/, tasks/, workers/ or api_stub/. Build it from Settings with
:func:`build_cache` (sync) or :func:`build_async_cache` (asyncio). A process that needs both
fronts builds one :class:`CacheCore` and passes it to both builders, so they share one
breaker, one outbox and one metrics registry (services.Services does this). Application
functions are cached with :class:`CacheRegion` (cache/decorator.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cache.aio import AsyncCacheService
from cache.client import connect, connect_async
from cache.decorator import CacheRegion
from cache.flow import CacheCore
from cache.keys import Keys
from cache.ops import Fetched, Outcome
from cache.service import CacheService
from cache.types import MISS, NOT_FOUND, DataType

if TYPE_CHECKING:
    from cache.client import AsyncClients, SyncClients
    from config import Settings


def build_cache(
    settings: Settings, *, core: CacheCore | None = None, clients: SyncClients | None = None
) -> CacheService:
    """The sync front: over ``core`` when given (else a new one), on ``clients`` when given
    (else new ones, which the front closes)."""
    return CacheService(core or CacheCore.from_settings(settings), clients or connect(settings))


def build_async_cache(
    settings: Settings, *, core: CacheCore | None = None, clients: AsyncClients | None = None
) -> AsyncCacheService:
    """The asyncio front; ``core`` and ``clients`` as for :func:`build_cache`."""
    return AsyncCacheService(
        core or CacheCore.from_settings(settings), clients or connect_async(settings)
    )


__all__ = [
    "MISS",
    "NOT_FOUND",
    "AsyncCacheService",
    "CacheCore",
    "CacheRegion",
    "CacheService",
    "DataType",
    "Fetched",
    "Keys",
    "Outcome",
    "build_async_cache",
    "build_cache",
]
