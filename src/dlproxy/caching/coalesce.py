"""Single flight: while an item is being computed, identical items wait for that computation.

The first request to miss on a key becomes its leader and registers a future; later ones with the
same key await it. Every waiter gets the leader's result or the same error. The coalescer only
keeps the futures: the computation runs in a task the Gateway owns and awaits shielded
(``Gateway._infer_items``), so a leader that gives up (deadline, disconnect) does not cancel it
for the others. The computation's request carries the latest deadline of everyone who wants it
(none if anyone waits without one): a waiter that joins extends it, so a leader's short deadline
never fails the others, and a computation nobody wants any more is dropped at dequeue.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dlproxy.types import InferenceRequest


class Coalescer:
    """The futures of the items in flight, by cache key."""

    def __init__(self) -> None:
        self._inflight: dict[bytes, asyncio.Future[Any]] = {}
        self._computing: dict[bytes, InferenceRequest] = {}  # key -> the request computing it
        self.coalesced = 0

    def join(self, key: bytes, deadline: float | None = None) -> asyncio.Future[Any] | None:
        """The future to wait on if ``key`` is in flight (its computation now lives at least
        until ``deadline``, or without one); None makes the caller its leader."""
        future = self._inflight.get(key)
        if future is not None:
            self.coalesced += 1
            computing = self._computing.get(key)
            if computing is not None and computing.deadline is not None:
                computing.deadline = None if deadline is None else max(computing.deadline, deadline)
            return future
        self._inflight[key] = asyncio.get_running_loop().create_future()
        return None

    def computing(self, keys: list[bytes], request: InferenceRequest) -> None:
        """``request`` computes ``keys``: waiters that join extend its deadline."""
        for key in keys:
            self._computing[key] = request

    def resolve(self, key: bytes, value: Any) -> None:
        self._computing.pop(key, None)
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def fail(self, key: bytes, error: BaseException) -> None:
        self._computing.pop(key, None)
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited

    @property
    def inflight(self) -> int:
        return len(self._inflight)
