from __future__ import annotations

import threading

import pytest
import redis

from cache import CacheService, DataType
from cache.direct import DirectReader


def _connected(cache: CacheService) -> int:
    assert cache._direct is not None
    return sum(1 for _, conn in cache._direct._open if conn._sock is not None)


def test_one_connection_per_thread_and_orphans_closed(cache: CacheService) -> None:
    key = cache.keys.member(1)
    cache.set(key, {"id": 1}, DataType.MEMBER)
    before = _connected(cache)

    all_read, finish = threading.Barrier(9), threading.Event()

    def read_and_stay() -> None:
        assert cache.get(key, DataType.MEMBER) == {"id": 1}
        all_read.wait(5)
        finish.wait(5)

    def read() -> None:
        assert cache.get(key, DataType.MEMBER) == {"id": 1}

    threads = [threading.Thread(target=read_and_stay) for _ in range(8)]
    for thread in threads:
        thread.start()
    all_read.wait(5)
    assert _connected(cache) == before + 8  # one each, while they live
    finish.set()
    for thread in threads:
        thread.join()
    # A new thread's first read closes the connections of the threads that ended.
    late = threading.Thread(target=read)
    late.start()
    late.join()
    assert _connected(cache) == before + 1


def test_errors_do_not_poison_the_connection(cache: CacheService) -> None:
    pool = cache.clients.writer.connection_pool
    reader = DirectReader(pool)
    try:
        with pytest.raises(redis.ResponseError):
            reader.execute("NOSUCHCOMMAND")
        cache.clients.writer.set(cache.keys.member(2), b"raw")
        assert reader.get(cache.keys.member(2)) == b"raw"
        assert reader.mget([cache.keys.member(2), cache.keys.member(3)]) == [b"raw", None]
    finally:
        reader.close()
