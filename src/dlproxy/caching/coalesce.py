"""Single flight: while an item is being computed, identical items wait for that computation.

The first request to miss on a key becomes its leader and registers a future; later ones with the
same key await it. Every waiter gets the leader's result or the same error. The coalescer only
keeps the futures: the computation runs in a task the Gateway owns and awaits shielded
(``Gateway._infer_items``), so a leader that gives up (deadline, disconnect) does not cancel it
for the others.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Coalescer:
    """The futures of the items in flight, by cache key."""

    def __init__(self) -> None:
        self._inflight: dict[bytes, asyncio.Future[Any]] = {}
        self.coalesced = 0

    def join(self, key: bytes) -> asyncio.Future[Any] | None:
        """The future to wait on if ``key`` is in flight; None makes the caller its leader."""
        future = self._inflight.get(key)
        if future is not None:
            self.coalesced += 1
            return future
        self._inflight[key] = asyncio.get_running_loop().create_future()
        return None

    def resolve(self, key: bytes, value: Any) -> None:
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def fail(self, key: bytes, error: BaseException) -> None:
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited

    @property
    def inflight(self) -> int:
        return len(self._inflight)
