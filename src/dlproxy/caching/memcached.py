"""Memcached as the shared cache level, with aiomcache.

A lookup is one multi-get. aiomcache has no pipelining, so a store sends its SETs over a few
pooled connections at once (``lanes``), each lane one SET after another: a batch costs about
``len / lanes`` round trips, not ``len``.

aiomcache keys are text without spaces or control characters, so our binary keys go as hex.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import aiomcache

from dlproxy.caching.wire import Breaker, SharedCache

_THIRTY_DAYS = 30 * 24 * 3600  # memcached reads a longer expiry as a Unix time


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 11211) as a (host, port) pair."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, 11211
    if not host or not port.isdigit():
        raise ValueError(f"memcached address '{address}' must be HOST:PORT, e.g. 127.0.0.1:11211")
    return host.strip("[]"), int(port)


class MemcachedCache(SharedCache):
    """The shared level on a memcached server at ``address`` (``HOST:PORT``)."""

    name = "memcached"

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 0.05,
        ttl: float | None = None,
        prefix: bytes = b"dlp:",
        max_connections: int = 16,
        lanes: int = 4,
        breaker: Breaker | None = None,
    ) -> None:
        super().__init__(timeout=timeout, ttl=ttl, prefix=prefix, breaker=breaker)
        host, port = parse_address(address)
        self.address = address
        self._client = aiomcache.Client(host, port, pool_size=max_connections, pool_minsize=1)
        self._lanes = max(1, min(lanes, max_connections))

    def _server_key(self, key: bytes) -> bytes:
        return self.prefix + key.hex().encode()

    def _exptime(self) -> int:
        if self.ttl is None:
            return 0
        seconds = math.ceil(self.ttl)
        return seconds if seconds <= _THIRTY_DAYS else int(time.time()) + seconds

    async def _fetch(self, keys: list[bytes]) -> Sequence[bytes | None]:
        return await self._client.multi_get(*keys)

    async def _store(self, items: list[tuple[bytes, bytes]]) -> None:
        exptime = self._exptime()

        async def lane(part: list[tuple[bytes, bytes]]) -> None:
            for key, value in part:
                await self._client.set(key, value, exptime)

        lanes = min(self._lanes, len(items))
        async with asyncio.TaskGroup() as group:  # one lane failing stops the others
            for i in range(lanes):
                group.create_task(lane(items[i::lanes]))

    async def _remove(self, key: bytes) -> None:
        await self._client.delete(key)

    async def _disconnect(self) -> None:
        await self._client.close()

    async def _after_error(self, exc: Exception) -> None:
        # aiomcache returns a connection cancelled mid-reply (our timeout) to its pool, where the
        # next command would read the stale reply: drop every idle connection instead.
        await self._client.close()
