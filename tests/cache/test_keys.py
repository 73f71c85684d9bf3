from __future__ import annotations

import pytest

from cache.errors import InvalidKey
from cache.keys import Keys
from cache.kinds import KINDS, TAG_ANALYTICS, TAG_MEMBERS
from cache.types import DataType


def test_keys_live_under_the_prefix() -> None:
    keys = Keys("membership:")
    built = [
        keys.member(42),
        keys.analytics("dashboard"),
        keys.statistics("demographics"),
        keys.lookup("tiers"),
        keys.http("ab12"),
        keys.generation("members"),
        keys.system("metrics", "w1"),
        keys.entry(DataType.MEMBER, 7, "profile"),
    ]
    assert built == [
        "membership:member:42",
        "membership:analytics:dashboard",
        "membership:statistics:demographics",
        "membership:lookup:tiers",
        "membership:http:ab12",
        "membership:gen:members",
        "membership:sys:metrics:w1",
        "membership:member:7:profile",
    ]
    assert all(keys.owns(key) for key in built)
    assert keys.members([1, 2]) == ["membership:member:1", "membership:member:2"]


def test_lease_shares_the_keys_cluster_slot() -> None:
    from redis.crc import key_slot

    keys = Keys("membership:")
    for key in (keys.member(1), keys.analytics("dashboard", "2024")):
        lease = keys.lease(key)
        assert lease.startswith("membership:lease:")
        assert key_slot(lease.encode()) == key_slot(key.encode())


@pytest.mark.parametrize("part", ["a*b", "x y", "{tag}", "a?", "[ab]", "", "a\nb", "é"])
def test_unsafe_parts_are_refused(part: str) -> None:
    with pytest.raises(InvalidKey):
        Keys("membership:").member(part)


def test_patterns_are_confined_to_the_prefix() -> None:
    keys = Keys("membership:")
    assert keys.pattern("member:*") == "membership:member:*"
    for bad in ["", "[a-z]*", "a\\*", "x" * 201, "{member}*"]:
        with pytest.raises(InvalidKey):
            keys.pattern(bad)


def test_a_member_key_gives_back_its_id_and_nothing_else_does() -> None:
    keys = Keys("membership:")
    assert keys.member_id_of(keys.member(42)) == 42
    assert keys.member_id_of(keys.member(42).encode()) == 42  # as SCAN answers
    for other in (keys.lookup("tiers"), "other:member:42", keys.member("x1"), "membership:member:"):
        assert keys.member_id_of(other) is None


def test_variant_keys_are_the_current_keys_of_every_variant() -> None:
    keys = Keys("membership:")
    lookup, dashboard, member = KINDS["lookup"], KINDS["dashboard"], KINDS["member"]
    assert lookup.variant_keys(keys) == {
        "membership:lookup:tiers": ("tiers",),
        "membership:lookup:statuses": ("statuses",),
        "membership:lookup:countries": ("countries",),
    }
    # Generations in the kind's tag order or by tag (one read for many kinds) give one key.
    by_tag = {TAG_MEMBERS: 5, TAG_ANALYTICS: 9}
    assert dashboard.variant_keys(keys, [9]) == dashboard.variant_keys(keys, by_tag)
    assert list(dashboard.variant_keys(keys, by_tag)) == ["membership:analytics:dashboard:9"]
    with pytest.raises(ValueError, match="gens"):
        dashboard.variant_keys(keys)
    assert member.variant_keys(keys) == {}  # keyed by id: no variant to enumerate
