"""The inventory a backup's manifest records and a restore is checked against, on a
redis-server of the test's own (two databases, as the cache and the broker use)."""

from __future__ import annotations

import redis

from cache.keys import Keys
from tasks.jobs.inventory import Inventory, differences, expired, take_inventory
from tests.support.redis_procs import RedisProcess, start_redis

STREAM = "p:sys:{wb}:stream"


def _inventory(proc: RedisProcess) -> Inventory:
    clients: dict[int, redis.Redis] = {}

    def client_of(db: int) -> redis.Redis:
        return clients.setdefault(db, proc.client(db=db))

    try:
        return take_inventory(client_of, Keys("p:"))
    finally:
        for client in clients.values():
            client.close()


def test_differences_name_what_did_not_come_back() -> None:
    with start_redis() as proc:
        cache, broker = proc.client(), proc.client(db=1)
        cache.set("p:member:1", "a", ex=600)
        cache.set("p:member:2", "b", ex=600)
        cache.set("p:gen:members", 5)
        entry = cache.xadd(STREAM, {"e": "1"}).decode()
        cache.xgroup_create(STREAM, "flushers", id="0")
        broker.lpush("cache.invalidate", "message")
        broker.set("_kombu.binding.cache.invalidate", "binding")
        taken = _inventory(proc)
        assert taken["0"]["families"] == {
            "gen/string": {"persistent": 1, "volatile": 0},
            "member/string": {"persistent": 0, "volatile": 2},
            "sys:{wb}/stream": {"persistent": 1, "volatile": 0},
        }
        assert taken["0"]["streams"][STREAM] == {
            "length": 1,
            "last_id": entry,
            "groups": {"flushers": {"pending": 0, "last_delivered_id": "0-0", "consumers": 0}},
        }
        assert taken["1"]["families"] == {
            "other/string": {"persistent": 1, "volatile": 0},
            "queue:cache.invalidate/list": {"persistent": 1, "volatile": 0},
        }
        assert taken["1"]["queues"] == {"cache.invalidate": 1}
        assert differences(taken, _inventory(proc)) == []

        # A record expired (allowed), the group moved, the queued message and a
        # generation without TTL gone.
        cache.delete("p:member:2", "p:gen:members")
        cache.xreadgroup("flushers", "c1", {STREAM: ">"})
        broker.rpop("cache.invalidate")
        now = _inventory(proc)
        found = differences(taken, now)
        assert found[0] == "db 0 gen/string: 0 keys without TTL, the backup has 1"
        assert found[1].startswith(f"db 0 stream {STREAM}: {{'length': 1")
        assert "'pending': 1" in found[1] and found[2:] == [
            "db 1 queue:cache.invalidate/list: 0 keys without TTL, the backup has 1",
            "db 1 queue cache.invalidate: None, the backup has 1",
        ]
        assert expired(taken, now) == 1

        # More than the backup holds: a difference, unless keys beside it were kept (--force).
        cache.set("p:gen:members", 5)
        cache.set("p:gen:other", 1)
        cache.set("p:member:3", "c", ex=600)
        cache.set("p:member:4", "d", ex=600)
        cache.delete(STREAM)
        broker.lpush("cache.invalidate", "message")
        more = _inventory(proc)
        assert differences(taken, more) == [
            "db 0 gen/string: 2 keys without TTL, the backup has 1",
            "db 0 member/string: 3 keys with a TTL, more than the backup's 2",
            "db 0 sys:{wb}/stream: 0 keys without TTL, the backup has 1",
            f"db 0 stream {STREAM}: None, the backup has {taken['0']['streams'][STREAM]}",
        ]
        assert differences(taken, more, extra_allowed=True) == [
            "db 0 sys:{wb}/stream: 0 keys without TTL, the backup has 1",
            f"db 0 stream {STREAM}: None, the backup has {taken['0']['streams'][STREAM]}",
        ]
        cache.close()
        broker.close()
