"""MemcachedCache against a real memcached: real arrays round trip, batched lookups and stores,
TTL, and keys laid out as text (hex) as memcached's text protocol requires."""

from __future__ import annotations

import socket

import pytest
from cache_rows import assert_same_row, key, make_row

from dlproxy.caching.memcached import MemcachedCache, parse_address
from servers import MemcachedServer


def ask(server: MemcachedServer, command: bytes, end: bytes = b"\r\n") -> bytes:
    """One text-protocol command; its reply, read up to ``end``."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
        s.sendall(command)
        reply = b""
        while not reply.endswith(end):
            reply += s.recv(65536)
        return reply


def stat(server: MemcachedServer, name: str) -> int:
    for line in ask(server, b"stats\r\n", end=b"END\r\n").decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise KeyError(name)


def test_addresses_parse_with_a_clear_error() -> None:
    assert parse_address("127.0.0.1:11311") == ("127.0.0.1", 11311)
    assert parse_address("cache.local") == ("cache.local", 11211)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("127.0.0.1:port")


async def test_real_arrays_round_trip(memcached_server: MemcachedServer) -> None:
    cache = MemcachedCache(memcached_server.address)
    try:
        rows = [make_row(i) for i in range(3)]
        assert await cache.put_many([(key(i), row) for i, row in enumerate(rows)])
        found = await cache.get_many([key(i) for i in range(3)])
        for got, want in zip(found, rows, strict=True):
            assert_same_row(got, want)
        assert await cache.get(key(99)) is None
    finally:
        await cache.close()


async def test_a_batch_is_one_multi_get_and_one_store_call(
    memcached_server: MemcachedServer,
) -> None:
    cache = MemcachedCache(memcached_server.address)
    try:
        assert await cache.put_many([(key(i), make_row(i)) for i in range(50)])
        keys = [key(i) for i in range(60)] + [key(0), key(1)]  # 10 absent, 2 asked twice
        found = await cache.get_many(keys)
        assert [row is not None for row in found] == [True] * 50 + [False] * 10 + [True, True]
        stats = cache.statistics()
        assert (stats.hits, stats.misses, stats.errors) == (52, 10, 0)
        assert (stats.writes, stats.write_batches) == (50, 1)
        assert stat(memcached_server, "cmd_set") == 50
        assert stat(memcached_server, "get_hits") == 50  # each distinct key asked once
    finally:
        await cache.close()


async def test_keys_are_hex_behind_the_prefix_and_carry_the_ttl(
    memcached_server: MemcachedServer,
) -> None:
    cache = MemcachedCache(memcached_server.address, ttl=100.5)
    try:
        await cache.put_many([(key(7), make_row(7))])
    finally:
        await cache.close()
    reply = ask(memcached_server, b"mg dlp:" + key(7).hex().encode() + b" t\r\n")
    assert reply.startswith(b"HD t")
    assert 95 <= int(reply.split()[1][1:]) <= 101
