"""The cache core: keys, envelope codec, TTL policy, breaker, metrics, sync and async fronts.

It imports nothing from db/, tasks/, workers/ or api_stub/. Build it from Settings with
:func:`build_cache` (sync) or :func:`build_async_cache` (asyncio); application functions are
cached with :class:`CacheRegion` (cache/decorator.py).
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
    from config import Settings


def build_cache(settings: Settings) -> CacheService:
    return CacheService(CacheCore.from_settings(settings), connect(settings))


def build_async_cache(settings: Settings) -> AsyncCacheService:
    return AsyncCacheService(CacheCore.from_settings(settings), connect_async(settings))


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
