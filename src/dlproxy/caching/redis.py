"""Redis as the shared cache level: redis.asyncio with the hiredis parser and a bounded pool.

A lookup is one MGET, a store one pipelined batch of SET (PX ttl) without a transaction. The
client does not retry on its own: a failure goes straight to the breaker in ``SharedCache``,
which skips Redis for a while; the pool reconnects on the next call that goes through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dlproxy.caching.wire import Breaker, SharedCache


class RedisCache(SharedCache):
    """The shared level on a Redis server at ``url`` (``redis://host:port/db``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        ttl: float | None = None,
        prefix: bytes = b"dlp:",
        max_connections: int = 32,
        breaker: Breaker | None = None,
    ) -> None:
        super().__init__(timeout=timeout, ttl=ttl, prefix=prefix, breaker=breaker)
        self.url = url
        # Waiting for a free connection is bounded by our own per-call timeout, so the pool's is
        # only a backstop; a connect to a dead port fails at once (refused) or within the timeout.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,
            socket_connect_timeout=max(timeout, 0.5),
            socket_timeout=max(timeout, 1.0),
            retry=Retry(NoBackoff(), 0),
        )
        self._client = Redis(connection_pool=pool)
        self._px = None if ttl is None else max(1, math.ceil(ttl * 1000))

    async def _fetch(self, keys: list[bytes]) -> Sequence[bytes | None]:
        values: list[bytes | None] = await self._client.mget(keys)  # type: ignore[assignment]
        return values  # bytes: the client is made without decode_responses

    async def _store(self, items: list[tuple[bytes, bytes]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(key, value, px=self._px)
            await pipe.execute()

    async def _remove(self, key: bytes) -> None:
        await self._client.delete(key)

    async def _disconnect(self) -> None:
        await self._client.aclose(close_connection_pool=True)
