"""A shared level that is down, hung, flapping or holding garbage answers misses within its
timeout and never raises; once the server is back, the level uses it again by itself. The same
checks for Redis and memcached."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from cache_rows import assert_same_row, key, make_row

import servers
from dlproxy.caching.memcached import MemcachedCache
from dlproxy.caching.redis import RedisCache
from dlproxy.caching.wire import FORMAT, Breaker, SharedCache, decode_row, encode_row
from dlproxy.clock import ManualClock

TIMEOUT = 0.05
SLACK = 0.25  # a loaded 2-core machine may run the timeout's callback late


class Level:
    """A server, a way to build a level on it, and a way to write raw values behind its back."""

    def __init__(self, server: servers.CacheServer, kind: str) -> None:
        self.server = server
        self.kind = kind

    def cache(self, breaker: Breaker | None = None) -> SharedCache:
        if isinstance(self.server, servers.RedisServer):
            return RedisCache(self.server.url, timeout=TIMEOUT, breaker=breaker)
        assert isinstance(self.server, servers.MemcachedServer)
        return MemcachedCache(self.server.address, timeout=TIMEOUT, breaker=breaker)

    def write_raw(self, cache: SharedCache, item: bytes, value: bytes) -> None:
        server_key = cache._server_key(item)
        if isinstance(self.server, servers.RedisServer):
            with redis.Redis.from_url(self.server.url) as client:
                client.set(server_key, value)
            return
        command = b"set %s 0 0 %d\r\n%s\r\n" % (server_key, len(value), value)
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=2) as s:
            s.sendall(command)
            assert s.recv(64) == b"STORED\r\n"


STARTERS: dict[str, Callable[[], servers.CacheServer]] = {
    "redis": servers.RedisServer,
    "memcached": servers.MemcachedServer,
}


@pytest.fixture(params=sorted(STARTERS))
def level(request: pytest.FixtureRequest) -> Iterator[Level]:
    server = STARTERS[request.param]()
    server.start()
    try:
        yield Level(server, request.param)
    finally:
        server.stop()


async def timed(call: asyncio.Future[object] | object) -> tuple[object, float]:
    started = time.monotonic()
    result = await call  # type: ignore[misc]
    return result, time.monotonic() - started


async def test_corrupt_and_foreign_values_are_misses(level: Level) -> None:
    cache = level.cache()
    try:
        level.write_raw(cache, key(1), FORMAT + b"\xc1 not msgpack")
        level.write_raw(cache, key(2), b"\x7f" + encode_row(make_row(2))[1:])  # another format
        level.write_raw(cache, key(3), FORMAT + b"\x81\xa1x\x93\xa4FP32\x91\x05\xc4\x03abc")
        assert await cache.put_many([(key(4), make_row(4))])
        found = await cache.get_many([key(1), key(2), key(3), key(4)])
        assert found[:3] == [None, None, None]
        assert_same_row(found[3], make_row(4))
        stats = cache.statistics()
        assert (stats.corrupt, stats.errors, stats.hits) == (3, 0, 1)
    finally:
        await cache.close()


async def test_a_killed_server_is_a_miss_within_the_timeout_then_costs_nothing(
    level: Level,
) -> None:
    cache = level.cache()
    try:
        assert await cache.put_many([(key(1), make_row(1))])
        level.server.kill()
        found, elapsed = await timed(cache.get_many([key(1), key(2)]))
        assert found == [None, None]
        assert elapsed < TIMEOUT + SLACK
        assert cache.statistics().errors == 1
        # The breaker is open: no call at all, so no error and no wait.
        assert await cache.put_many([(key(3), make_row(3))]) is False
        assert await cache.get_many([key(1)]) == [None]
        stats = cache.statistics()
        assert (stats.errors, stats.skipped, stats.available) == (1, 2, False)
    finally:
        await cache.close()


async def test_a_hung_server_is_a_miss_within_the_timeout(level: Level) -> None:
    cache = level.cache(Breaker(first=0.01, longest=0.01))
    try:
        # A fresh server's first connection can take longer than the 50 ms timeout on a loaded
        # machine (seen with Redis): wait until it takes a write, then hang it.
        for _ in range(100):
            if await cache.put_many([(key(1), make_row(1))]):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the server never took the first write")
        level.server.pause()
        found, elapsed = await timed(cache.get_many([key(1)]))
        assert found == [None]
        assert elapsed < TIMEOUT + SLACK
        await asyncio.sleep(0.02)  # let the breaker allow a probe
        stored, elapsed = await timed(cache.put_many([(key(2), make_row(2))]))
        assert stored is False
        assert elapsed < TIMEOUT + SLACK
        level.server.resume()
        await asyncio.sleep(0.02)
        # No stale reply from the timed-out calls is read as this one's answer.
        assert_same_row((await cache.get_many([key(1)]))[0], make_row(1))
    finally:
        await cache.close()


async def test_a_restarted_server_is_used_again_by_itself(level: Level) -> None:
    cache = level.cache(Breaker(first=0.05, longest=0.2))
    try:
        assert await cache.put_many([(key(1), make_row(1))])
        level.server.kill()
        assert await cache.get_many([key(1)]) == [None]
        level.server.start()  # same port, empty
        deadline = time.monotonic() + 3
        while not await cache.put_many([(key(2), make_row(2))]):
            assert time.monotonic() < deadline, "the level did not come back"
            await asyncio.sleep(0.02)
        assert_same_row((await cache.get_many([key(2)]))[0], make_row(2))
        assert cache.statistics().available
    finally:
        await cache.close()


def test_the_breaker_backs_off_doubling_and_lets_one_probe_through() -> None:
    clock = ManualClock()
    breaker = Breaker(first=0.5, longest=2.0, clock=clock)
    assert breaker.allows()
    breaker.failed()
    breaker.failed()  # a call that was in flight when the server died: no longer back-off
    assert not breaker.allows()
    clock.advance(0.5)
    assert breaker.allows()  # the probe
    assert not breaker.allows()  # the others keep skipping while it runs
    breaker.failed()
    clock.advance(0.9)
    assert not breaker.allows()  # now 1 s
    clock.advance(0.1)
    assert breaker.allows()
    breaker.failed()
    clock.advance(2.0)  # 2 s, and never longer
    assert breaker.allows()
    breaker.failed()
    clock.advance(2.0)
    assert breaker.allows()
    breaker.succeeded()
    assert breaker.allows() and breaker.allows() and breaker.closed


def test_a_value_from_another_format_decodes_to_none() -> None:
    data = encode_row(make_row(5))
    assert data[:1] == FORMAT
    assert_same_row(decode_row(data), make_row(5))
    assert decode_row(b"") is None
    assert decode_row(b"\x02" + data[1:]) is None
    assert decode_row(data[:-3]) is None
