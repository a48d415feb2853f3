"""RedisCache against a real redis-server: real arrays round trip, one MGET per lookup and one
pipeline per store, TTL, and keys laid out as other tools can read them."""

from __future__ import annotations

import redis
from cache_rows import assert_same_row, key, make_row

from dlproxy.caching.redis import RedisCache
from dlproxy.caching.wire import decode_row
from servers import RedisServer


def command_calls(server: RedisServer, command: str) -> int:
    with redis.Redis.from_url(server.url) as client:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {"calls": 0})
        return int(stats["calls"])


async def test_uses_the_hiredis_parser(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    try:
        connection = cache._client.connection_pool.make_connection()
        assert type(connection._parser).__name__ == "_AsyncHiredisParser"
    finally:
        await cache.close()


async def test_real_arrays_round_trip(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    try:
        rows = [make_row(i) for i in range(3)]
        assert await cache.put_many([(key(i), row) for i, row in enumerate(rows)])
        found = await cache.get_many([key(i) for i in range(3)])
        for got, want in zip(found, rows, strict=True):
            assert_same_row(got, want)
        assert await cache.get(key(99)) is None
    finally:
        await cache.close()


async def test_a_batch_is_one_mget_and_one_pipeline(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    try:
        assert await cache.put_many([(key(i), make_row(i)) for i in range(50)])
        keys = [key(i) for i in range(60)] + [key(0), key(1)]  # 10 absent, 2 asked twice
        found = await cache.get_many(keys)
        assert [row is not None for row in found] == [True] * 50 + [False] * 10 + [True, True]
        stats = cache.statistics()
        assert (stats.hits, stats.misses, stats.errors) == (52, 10, 0)
        assert (stats.writes, stats.write_batches) == (50, 1)
        assert command_calls(redis_server, "mget") == 1
        assert command_calls(redis_server, "set") == 50
        assert command_calls(redis_server, "get") == 0
    finally:
        await cache.close()


async def test_keys_are_prefixed_and_values_readable_by_anyone(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, prefix=b"test:")
    try:
        await cache.put_many([(key(7), make_row(7))])
    finally:
        await cache.close()
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.keys("*") == [b"test:" + key(7)]
        assert_same_row(decode_row(client.get(b"test:" + key(7))), make_row(7))


async def test_ttl_is_set_in_milliseconds(redis_server: RedisServer) -> None:
    with_ttl = RedisCache(redis_server.url, ttl=2.5, prefix=b"ttl:")
    without = RedisCache(redis_server.url, prefix=b"none:")
    try:
        await with_ttl.put_many([(key(1), make_row(1))])
        await without.put_many([(key(1), make_row(1))])
    finally:
        await with_ttl.close()
        await without.close()
    with redis.Redis.from_url(redis_server.url) as client:
        assert 2000 < client.pttl(b"ttl:" + key(1)) <= 2500
        assert client.pttl(b"none:" + key(1)) == -1
