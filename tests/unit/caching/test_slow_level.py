"""A shared level that answers, but slowly: the breaker opens on latency, not only on errors."""

from __future__ import annotations

import asyncio

import numpy as np

from dlproxy.caching.wire import SLOW_CALLS, Breaker, SharedCache, encode_row


class SlowLevel(SharedCache):
    """Answers every call after ``delay`` seconds (a server just under the timeout; 70 ms of
    margin, so a loaded machine's own delay does not turn a slow answer into a timeout)."""

    def __init__(self, delay: float) -> None:
        super().__init__(timeout=0.5, breaker=Breaker(first=0.2, longest=0.2))
        self.delay = delay
        self.calls = 0
        self.values: dict[bytes, bytes] = {}

    async def _fetch(self, keys: list[bytes]) -> list[bytes | None]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return [self.values.get(key) for key in keys]

    async def _store(self, items: list[tuple[bytes, bytes]]) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        self.values.update(items)

    async def _remove(self, key: bytes) -> None:
        self.values.pop(key, None)

    async def _disconnect(self) -> None:
        pass


async def test_calls_just_under_the_timeout_open_the_breaker_and_it_closes_when_fast_again() -> (
    None
):
    level = SlowLevel(delay=0.43)
    level.values[b"dlp:k"] = encode_row({"y": np.ones((1, 2), np.float32)})
    for _ in range(SLOW_CALLS):
        assert (await level.get_many([b"k"]))[0] is not None  # slow, but answered
    assert not level.available and level.statistics().slow == 1
    calls = level.calls
    assert await level.get_many([b"k"]) == [None]  # skipped: no request pays the latency
    assert level.calls == calls
    level.delay = 0.0
    await asyncio.sleep(0.25)  # the back-off runs out; the probe is fast
    assert (await level.get_many([b"k"]))[0] is not None
    assert level.available


async def test_an_occasional_slow_call_does_not_open_it() -> None:
    level = SlowLevel(delay=0.43)
    for _round in range(2):
        for _ in range(SLOW_CALLS - 1):
            await level.get_many([b"k"])
        level.delay = 0.0
        await level.get_many([b"k"])
        level.delay = 0.43
    assert level.available and level.statistics().slow == 0
