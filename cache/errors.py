"""Exceptions of the cache core.

    CacheError
    ├── CacheUnavailable      Redis could not be reached or answered with an error
    │   └── BreakerOpen       the circuit breaker is open: Redis was not even tried
    ├── CorruptEntry          stored bytes are not an envelope this code can read
    ├── InvalidKey            a key part would break the keyspace (glob characters, braces)
    ├── RegionError           a @region.cached function has no front of its kind (sync/async)
    ├── LoadDeclined          raised by a loader: the source refused the request (a client's
    │                         404 or 422); nothing is cached, counted apart from errors
    └── (write-behind, cache/writebehind/)
        ├── Backpressure      the buffer is past its limit: refuse (503), never drop
        ├── InvalidEvent      an event that can never be recorded as given
        ├── Unwritable        rows the database will never take: dead-lettered
        └── BatchOverlap      a batch partly applied already: only the rest is applied

Callers of the service rarely see them: reads fail open to the loader and writes are skipped.
redis-py errors are translated here, at the boundary, with ``raise ... from exc``.
"""

from __future__ import annotations


class CacheError(Exception):
    """Root of every error raised by the cache core."""


class CacheUnavailable(CacheError):
    """Redis did not answer, answered too slowly, or refused the command."""


class BreakerOpen(CacheUnavailable):
    """The circuit breaker is open; Redis was skipped without a network call."""


class CorruptEntry(CacheError):
    """Stored bytes are not a readable envelope (foreign, truncated or a newer schema)."""


class InvalidKey(CacheError, ValueError):
    """A key part contains characters that would let it escape its place in the keyspace."""


class LoadDeclined(CacheError):
    """Raised by a loader: the source refused this request (the client asked for something
    that does not exist or is invalid). Not an error of the cache: counted as ``declined``."""


class RegionError(CacheError, RuntimeError):
    """A cached function was called on a region bound without the front it needs."""
