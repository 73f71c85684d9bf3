"""The value envelope: a self-describing header, then JSON (optionally zstd) or raw bytes.

Layout, big-endian, 32 bytes of header::

    0   magic 0xC7             foreign bytes (another app's key, a pickle) fail here
    1   format                 JSON, JSON+zstd, RAW, RAW+zstd, NOT_FOUND or RETIRED
    2   schema version         bumped when this layout changes; older readers see a miss
    3   flags                  reserved, 0
    4   created_at     f64     unix seconds when the value was computed
    12  soft_expires_at f64    logical expiry; after it the value is stale (hard TTL is later)
    20  compute_time   f32     seconds the loader took; XFetch's delta
    24  version        i64     source version (member.version); write guards compare it
    32  body

A RETIRED envelope has no value: it stands where an invalidation that could not reach Redis in
time left a key (cache/outbox.py), a miss for every reader, and its version keeps any write or
fill of an older version out (scripts.py compares it like any other).

Never pickle: a cache shared by processes must not execute what it reads.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import zstandard

from cache.errors import CorruptEntry

MAGIC: Final = 0xC7
SCHEMA_VERSION: Final = 1
FMT_JSON: Final = 0
FMT_JSON_ZSTD: Final = 1
FMT_RAW: Final = 2
FMT_RAW_ZSTD: Final = 3
FMT_NOT_FOUND: Final = 4
FMT_RETIRED: Final = 5

_HEADER: Final = struct.Struct(">BBBBddfq")
HEADER_SIZE: Final = _HEADER.size
# 1-based offset of the version field, for struct.unpack in Lua scripts.
VERSION_OFFSET_LUA: Final = 25

_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstandard objects are not safe to share between threads; one per thread is cheap.
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=3)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


@dataclass(slots=True)  # not frozen: a frozen init costs ~0.7 us on every hit
class Entry:
    """A decoded envelope."""

    value: Any
    created_at: float
    soft_expires_at: float
    compute_time: float
    version: int
    not_found: bool = False
    retired: bool = False  # no value: a miss whose version fences older writes off

    def is_stale(self, now: float) -> bool:
        return now >= self.soft_expires_at


def encode(
    value: Any,
    *,
    created_at: float,
    soft_expires_at: float,
    compute_time: float = 0.0,
    version: int = 0,
    compress_threshold: int = 4096,
) -> bytes:
    """Serialize a value (JSON-compatible, or bytes stored as they are) into an envelope."""
    body, fmt = _body(value, compress_threshold)
    header = _HEADER.pack(
        MAGIC, fmt, SCHEMA_VERSION, 0, created_at, soft_expires_at, compute_time, version
    )
    return header + body


def encode_many(
    values: Sequence[Any],
    versions: Sequence[int],
    *,
    created_at: float,
    soft_expires_at: Sequence[float],
    compress_threshold: int = 4096,
) -> list[bytes]:
    """:func:`encode` for many values created together (no compute time), one envelope each."""
    pack = _HEADER.pack
    out = []
    for value, version, soft in zip(values, versions, soft_expires_at, strict=True):
        body, fmt = _body(value, compress_threshold)
        out.append(pack(MAGIC, fmt, SCHEMA_VERSION, 0, created_at, soft, 0.0, version) + body)
    return out


def _body(value: Any, compress_threshold: int) -> tuple[bytes, int]:
    if isinstance(value, bytes | bytearray | memoryview):
        body, fmt, zfmt = bytes(value), FMT_RAW, FMT_RAW_ZSTD
    else:
        try:
            body = orjson.dumps(value)
        except TypeError as exc:
            raise TypeError(f"cache values must be JSON-serializable or bytes: {exc}") from exc
        fmt, zfmt = FMT_JSON, FMT_JSON_ZSTD
    if compress_threshold and len(body) >= compress_threshold:
        packed = _compressor().compress(body)
        if len(packed) < len(body):
            return packed, zfmt
    return body, fmt


def encode_not_found(*, created_at: float, soft_expires_at: float, version: int = 0) -> bytes:
    """A negative entry: the source said the thing does not exist."""
    return _HEADER.pack(
        MAGIC, FMT_NOT_FOUND, SCHEMA_VERSION, 0, created_at, soft_expires_at, 0.0, version
    )


def encode_retired(*, created_at: float, version: int) -> bytes:
    """A retired key: read as a miss; fills and writes of an older version are refused."""
    return _HEADER.pack(MAGIC, FMT_RETIRED, SCHEMA_VERSION, 0, created_at, created_at, 0.0, version)


def decode(raw: bytes) -> Entry:
    """Parse an envelope; raise CorruptEntry for anything that is not one we can read."""
    if len(raw) < HEADER_SIZE or raw[0] != MAGIC:
        raise CorruptEntry("not a cache envelope")
    _, fmt, schema, _, created, soft, compute, version = _HEADER.unpack_from(raw)
    if schema != SCHEMA_VERSION:
        raise CorruptEntry(f"unknown schema version {schema}")
    body = memoryview(raw)[HEADER_SIZE:]
    try:
        if fmt == FMT_JSON:
            value = orjson.loads(body)
        elif fmt == FMT_RAW:
            value = bytes(body)
        elif fmt == FMT_NOT_FOUND:
            return Entry(None, created, soft, compute, version, not_found=True)
        elif fmt == FMT_RETIRED:
            return Entry(None, created, soft, compute, version, retired=True)
        elif fmt in (FMT_JSON_ZSTD, FMT_RAW_ZSTD):
            if bytes(body[:4]) != _ZSTD_MAGIC:
                raise CorruptEntry("zstd frame expected")
            plain = _decompressor().decompress(body)
            value = orjson.loads(plain) if fmt == FMT_JSON_ZSTD else plain
        else:
            raise CorruptEntry(f"unknown format {fmt}")
    except (orjson.JSONDecodeError, zstandard.ZstdError) as exc:
        raise CorruptEntry(f"undecodable body: {exc}") from exc
    return Entry(value, created, soft, compute, version)


@dataclass(frozen=True, slots=True)
class Header:
    """What an envelope's first HEADER_SIZE bytes say, read without the body (GETRANGE)."""

    created_at: float
    version: int
    not_found: bool


def read_header(raw: bytes | None) -> Header | None:
    """The header of an envelope (or of its first HEADER_SIZE bytes); None for anything else,
    a retired key included (it holds no value)."""
    if not raw or len(raw) < HEADER_SIZE or raw[0] != MAGIC:
        return None
    _, fmt, schema, _, created, _, _, version = _HEADER.unpack_from(raw)
    if schema != SCHEMA_VERSION or fmt == FMT_RETIRED:
        return None
    return Header(created, version, fmt == FMT_NOT_FOUND)
