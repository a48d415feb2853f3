"""TieredCache over a real Redis: L2 hits promoted into L1, and the three write policies
(through: in Redis when the store returns; back: buffered, bounded, flushed by ``close``;
combining: concurrent stores in one pipeline)."""

from __future__ import annotations

import asyncio
import time

import redis
from cache_rows import assert_same_row, key, make_row

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.redis import RedisCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.caching.wire import Breaker
from servers import RedisServer


def stored_keys(server: RedisServer) -> set[bytes]:
    with redis.Redis.from_url(server.url) as client:
        return set(client.keys(b"dlp:*"))


def set_calls(server: RedisServer) -> int:
    with redis.Redis.from_url(server.url) as client:
        return int(client.info("commandstats").get("cmdstat_set", {"calls": 0})["calls"])


def tiered(server: RedisServer, policy: str = "through", **options: object) -> TieredCache:
    return TieredCache(MemoryCache("lru", 1000), RedisCache(server.url), policy, **options)  # type: ignore[arg-type]


async def test_an_l2_hit_is_promoted_into_l1(redis_server: RedisServer) -> None:
    a, b = tiered(redis_server), tiered(redis_server)
    try:
        await a.put_many([(key(1), make_row(1))])
        [(row, level), (absent, miss)] = await b.get_many([key(1), key(2)])
        assert (level, absent, miss) == ("l2", None, "miss")
        assert_same_row(row, make_row(1))
        [(row, level)] = await b.get_many([key(1)])
        assert level == "l1"
        stats = b.statistics()
        assert (stats["l1"].entries, stats["l2"]["hits"], stats["l2"]["misses"]) == (1, 1, 1)
    finally:
        await a.close()
        await b.close()


async def test_l2_alone_works_without_l1(redis_server: RedisServer) -> None:
    cache = TieredCache(None, RedisCache(redis_server.url))
    try:
        await cache.put_many([(key(1), make_row(1))])
        [(row, level)] = await cache.get_many([key(1)])
        assert level == "l2"
        assert_same_row(row, make_row(1))
        assert cache.statistics()["l1"] is None
    finally:
        await cache.close()


async def test_write_through_is_in_redis_when_the_store_returns(redis_server: RedisServer) -> None:
    cache = tiered(redis_server)
    try:
        await cache.put_many([(key(i), make_row(i)) for i in range(5)])
        assert len(stored_keys(redis_server)) == 5
    finally:
        await cache.close()


async def test_a_dead_l2_never_fails_a_lookup_or_a_store(redis_server: RedisServer) -> None:
    cache = tiered(redis_server)
    try:
        await cache.put_many([(key(1), make_row(1))])
        redis_server.kill()
        await cache.put_many([(key(2), make_row(2))])
        found = await cache.get_many([key(1), key(2), key(3)])
        assert [level for _, level in found] == ["l1", "l1", "miss"]
        assert cache.statistics()["l2"]["errors"] == 1
    finally:
        await cache.close()


async def test_write_back_holds_entries_until_close_flushes_them(redis_server: RedisServer) -> None:
    cache = tiered(redis_server, "back", flush_interval=60.0, flush_batch=100)
    await cache.put_many([(key(i), make_row(i)) for i in range(40)])
    await cache.put_many([(key(i), make_row(i)) for i in range(40, 50)])
    assert stored_keys(redis_server) == set()
    assert cache.statistics()["l2"]["pending"] == 50
    await cache.close()
    assert len(stored_keys(redis_server)) == 50
    stats = cache.statistics()["l2"]
    assert (stats["pending"], stats["flushed"], stats["dropped"]) == (0, 50, 0)
    assert stats["write_batches"] == 1  # one pipelined batch


async def test_write_back_flushes_in_the_background(redis_server: RedisServer) -> None:
    cache = tiered(redis_server, "back", flush_interval=0.02, flush_batch=16)
    try:
        for i in range(40):
            await cache.put_many([(key(i), make_row(i))])
        deadline = time.monotonic() + 2
        while len(stored_keys(redis_server)) < 40:
            assert time.monotonic() < deadline, "the write-back task did not flush"
            await asyncio.sleep(0.02)
        assert cache.statistics()["l2"]["write_batches"] < 40
    finally:
        await cache.close()


async def test_a_full_write_back_buffer_never_makes_a_store_wait(
    redis_server: RedisServer,
) -> None:
    cache = tiered(redis_server, "back", flush_interval=60.0, flush_batch=100, max_dirty=8)
    try:
        for i in range(8):
            await cache.put_many([(key(i), make_row(i))])
        assert stored_keys(redis_server) == set()
        redis_server.pause()  # a stalled server: a store must still return at once
        try:
            await asyncio.wait_for(cache.put_many([(key(8), make_row(8))]), 0.05)
        finally:
            redis_server.resume()
        stats = cache.statistics()["l2"]
        assert (stats["pending"], stats["dropped"]) == (8, 1)  # the oldest gave way
        assert [level for _, level in await cache.get_many([key(0)])] == ["l1"]  # kept in L1
    finally:
        await cache.close()
    assert len(stored_keys(redis_server)) == 8


async def test_write_back_with_a_dead_l2_drops_the_oldest_instead_of_waiting(
    redis_server: RedisServer,
) -> None:
    l2 = RedisCache(redis_server.url, breaker=Breaker(first=5.0, longest=5.0))
    cache = TieredCache(MemoryCache("lru", 1000), l2, "back", flush_interval=0.01, max_dirty=8)
    redis_server.kill()
    assert await l2.get_many([key(0)]) == [None]  # opens the breaker
    for i in range(20):
        await asyncio.wait_for(cache.put_many([(key(i), make_row(i))]), 1.0)
    stats = cache.statistics()["l2"]
    assert (stats["pending"], stats["dropped"]) == (8, 12)
    started = time.monotonic()
    await cache.close()  # tries once more (refused at once), gives up on the rest
    assert time.monotonic() - started < 1.0
    assert cache.statistics()["l2"]["dropped"] == 20
    assert [level for _, level in await cache.get_many([key(0), key(19)])] == ["l1", "l1"]


async def test_combining_sends_concurrent_stores_as_one_pipeline(redis_server: RedisServer) -> None:
    cache = tiered(redis_server, "combining", combine_window=0.005)
    try:
        await asyncio.gather(*(cache.put_many([(key(i), make_row(i))]) for i in range(20)))
        assert len(stored_keys(redis_server)) == 20  # every caller's write is done
        stats = cache.statistics()["l2"]
        assert (stats["write_batches"], stats["combined_batches"], stats["writes"]) == (1, 1, 20)
        assert set_calls(redis_server) == 20
        await asyncio.gather(*(cache.put_many([(key(i), make_row(i))]) for i in range(20, 25)))
        assert cache.statistics()["l2"]["write_batches"] == 2
    finally:
        await cache.close()
