"""The decisions behind a lagging answer (api_stub.lagging), without Redis: what is kept, for
how long it may be served, and which requests refuse it. The middleware's use of them runs
against real Redis and PostgreSQL in tests/api/test_caching.py."""

from __future__ import annotations

import pytest

from api_stub.lagging import KeptValues, wants_current
from cache.kinds import KINDS, Kind, Storage
from cache.types import DataType


def test_a_value_is_served_only_within_the_lag_of_its_confirmation() -> None:
    kept = KeptValues()
    kept.keep("v", "key:1", {"run": 1}, confirmed=100.0)
    found = kept.within("v", now=110.0, lag=10.0)
    assert found is not None and (found.key, found.value) == ("key:1", {"run": 1})
    assert kept.within("v", now=110.01, lag=10.0) is None
    assert kept.within("other", now=100.0, lag=10.0) is None


def test_a_recompute_that_began_earlier_never_replaces_a_later_confirmation() -> None:
    kept = KeptValues()
    kept.keep("v", "key:3", "read later", confirmed=105.0)
    kept.keep("v", "key:2", "slow recompute", confirmed=101.0)  # ended after that read
    found = kept.within("v", now=106.0, lag=10.0)
    assert found is not None and found.value == "read later"


def test_the_least_recently_kept_variant_goes_first() -> None:
    kept = KeptValues(capacity=2)
    for name in ("a", "b", "c"):
        kept.keep(name, f"key:{name}", name, confirmed=1.0)
    assert len(kept) == 2
    assert kept.within("a", now=1.0, lag=1.0) is None
    assert kept.within("c", now=1.0, lag=1.0) is not None


@pytest.mark.parametrize(
    ("control", "current"),
    [
        (None, False),
        (b"no-cache", True),
        (b"max-age=0", True),  # a browser's reload
        (b'Max-Age="0"', True),
        (b"no-store, NO-CACHE", True),
        (b"max-age=60", False),
        (b"max-stale=5", False),
    ],
)
def test_which_requests_ask_for_the_current_value(control: bytes | None, current: bool) -> None:
    headers = {} if control is None else {b"cache-control": control}
    assert wants_current(headers) is current


def test_only_tagged_kinds_may_lag_and_records_never_do() -> None:
    with pytest.raises(ValueError, match="only a tagged kind lags"):
        Kind("x", DataType.MEMBER, Storage.RECORD, "a record", params=("id",), lag=1.0)
    with pytest.raises(ValueError, match="only a tagged kind lags"):
        Kind("y", DataType.ANALYTICS, Storage.ENTRY, "untagged", lag=1.0)
    with pytest.raises(ValueError, match="only a tagged kind lags"):
        Kind("z", DataType.ANALYTICS, Storage.ENTRY, "negative", tags=("t",), lag=-1.0)
    assert KINDS["member"].lag == 0
    assert all(kind.lag > 0 for kind in KINDS if kind.tags)  # every report and list lags


def test_only_lagging_kinds_are_kept_current() -> None:
    with pytest.raises(ValueError, match="only a lagging kind is kept current"):
        Kind("x", DataType.MEMBER, Storage.RESPONSE, "no lag", tags=("t",), kept_current=30.0)
    with pytest.raises(ValueError, match="only a lagging kind is kept current"):
        Kind(
            "y",
            DataType.MEMBER,
            Storage.RESPONSE,
            "negative",
            tags=("t",),
            lag=5.0,
            kept_current=-1.0,
        )
    assert KINDS["member_list"].kept_current > KINDS["member_list"].lag > 0
    assert KINDS["dashboard"].kept_current == 0  # a report's recompute is seconds of the database
