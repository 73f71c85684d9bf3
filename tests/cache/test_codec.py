from __future__ import annotations

import contextlib
import pickle
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import codec
from cache.errors import CorruptEntry

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=20), children, max_size=8)
    ),
    max_leaves=40,
)


@given(
    value=json_values,
    created=st.floats(0, 4e9),
    ttl=st.floats(0, 1e6),
    compute=st.floats(0, 100, width=32),
    version=st.integers(-(2**62), 2**62),
    threshold=st.sampled_from([0, 1, 64, 4096]),
)
def test_round_trip(
    value: Any, created: float, ttl: float, compute: float, version: int, threshold: int
) -> None:
    raw = codec.encode(
        value,
        created_at=created,
        soft_expires_at=created + ttl,
        compute_time=compute,
        version=version,
        compress_threshold=threshold,
    )
    entry = codec.decode(raw)
    assert entry.value == value
    assert entry.created_at == created
    assert entry.soft_expires_at == created + ttl
    assert entry.compute_time == compute
    assert entry.version == version
    assert not entry.not_found


@given(st.binary(max_size=20_000), st.sampled_from([0, 100]))
def test_bytes_round_trip(body: bytes, threshold: int) -> None:
    raw = codec.encode(body, created_at=1.0, soft_expires_at=2.0, compress_threshold=threshold)
    assert codec.decode(raw).value == body


@given(
    values=st.lists(json_values | st.binary(max_size=300), max_size=10),
    created=st.floats(0, 4e9),
    threshold=st.sampled_from([0, 1, 64, 4096]),
)
def test_encode_many_is_encode_of_each(values: list[Any], created: float, threshold: int) -> None:
    versions = list(range(len(values)))
    softs = [created + n for n in range(len(values))]
    assert codec.encode_many(
        values, versions, created_at=created, soft_expires_at=softs, compress_threshold=threshold
    ) == [
        codec.encode(
            value,
            created_at=created,
            soft_expires_at=soft,
            version=version,
            compress_threshold=threshold,
        )
        for value, version, soft in zip(values, versions, softs, strict=True)
    ]


def test_large_values_are_compressed_and_small_ones_not() -> None:
    big = {"rows": [{"id": i, "name": "member"} for i in range(500)]}
    small = {"id": 1}
    raw_big = codec.encode(big, created_at=0, soft_expires_at=1, compress_threshold=1024)
    raw_small = codec.encode(small, created_at=0, soft_expires_at=1, compress_threshold=1024)
    assert raw_big[1] == codec.FMT_JSON_ZSTD
    assert raw_small[1] == codec.FMT_JSON
    assert (
        len(raw_big)
        < len(codec.encode(big, created_at=0, soft_expires_at=1, compress_threshold=0)) / 5
    )
    assert codec.decode(raw_big).value == big


def test_not_found_marker() -> None:
    entry = codec.decode(codec.encode_not_found(created_at=5, soft_expires_at=35, version=7))
    assert entry.not_found and entry.version == 7 and entry.soft_expires_at == 35


def test_header_is_self_describing() -> None:
    raw = codec.encode([1], created_at=10.0, soft_expires_at=20.0, version=3)
    magic, fmt, schema = raw[0], raw[1], raw[2]
    assert (magic, fmt, schema) == (codec.MAGIC, codec.FMT_JSON, codec.SCHEMA_VERSION)
    # The Lua scripts read the version at this 1-based offset.
    assert struct.unpack_from(">q", raw, codec.VERSION_OFFSET_LUA - 1)[0] == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"plain text",
        pickle.dumps({"a": 1}),
        b"\xc7" * 10,
        codec.encode([1], created_at=0, soft_expires_at=1)[:-1] + b"\xff",
        bytes([codec.MAGIC, 9, codec.SCHEMA_VERSION, 0]) + bytes(28) + b"{}",
        bytes([codec.MAGIC, codec.FMT_JSON, 99, 0]) + bytes(28) + b"{}",
        bytes([codec.MAGIC, codec.FMT_JSON_ZSTD, codec.SCHEMA_VERSION, 0]) + bytes(28) + b"junk",
    ],
)
def test_foreign_or_corrupt_bytes_raise_corrupt_entry(raw: bytes) -> None:
    with pytest.raises(CorruptEntry):
        codec.decode(raw)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_otherwise(raw: bytes) -> None:
    with contextlib.suppress(CorruptEntry):
        codec.decode(raw)


def test_unserializable_value_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="JSON-serializable"):
        codec.encode({1, 2}, created_at=0, soft_expires_at=1)
