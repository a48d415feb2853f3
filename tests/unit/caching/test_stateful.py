"""Hypothesis state machines: each policy's cache against a naive reference model.

The models are written the obvious way (lists, scans, min()) so they are easy to believe. For
``lru``, ``fifo``, ``lfu`` and ``two_level`` the model predicts every answer exactly; ``tinylfu``
admits by a hashed sketch, so its model checks only what must hold for any policy: a read returns
exactly the last value put for that key or nothing, never a deleted, expired or unknown key's
value, and the bounds always hold.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dlproxy.caching.base import MemoryCache
from dlproxy.clock import ManualClock

MAX_ENTRIES = 5
MAX_BYTES = 50
KEYS = st.sampled_from([f"k{n}".encode() for n in range(12)])
SIZES = st.integers(min_value=0, max_value=MAX_BYTES + 5)
TTLS = st.none() | st.sampled_from([0.5, 1.0, 3.0])


class ListLRU:
    def __init__(self) -> None:
        self.order: list[Hashable] = []

    def insert(self, key: Hashable) -> None:
        self.order.append(key)

    def hit(self, key: Hashable) -> None:
        self.order.remove(key)
        self.order.append(key)

    def remove(self, key: Hashable) -> None:
        self.order.remove(key)

    def victim(self) -> Hashable:
        return self.order.pop(0)


class ListFIFO(ListLRU):
    def hit(self, key: Hashable) -> None:
        pass


class ListLFU:
    """Evict the smallest (count, time the key reached that count)."""

    def __init__(self) -> None:
        self.rank: dict[Hashable, tuple[int, int]] = {}
        self.tick = 0

    def _set(self, key: Hashable, count: int) -> None:
        self.tick += 1
        self.rank[key] = (count, self.tick)

    def insert(self, key: Hashable) -> None:
        self._set(key, 1)

    def hit(self, key: Hashable) -> None:
        self._set(key, self.rank[key][0] + 1)

    def remove(self, key: Hashable) -> None:
        del self.rank[key]

    def victim(self) -> Hashable:
        key = min(self.rank, key=lambda k: self.rank[k])
        del self.rank[key]
        return key


class ListTwoLevel:
    """New keys join main; a hit in main moves the key to hot; hot's overflow goes back to main."""

    def __init__(self, hot_max: int) -> None:
        self.hot_max = hot_max
        self.hot: list[Hashable] = []
        self.main: list[Hashable] = []

    def insert(self, key: Hashable) -> None:
        self.main.append(key)

    def hit(self, key: Hashable) -> None:
        if key in self.hot:
            self.hot.remove(key)
        else:
            self.main.remove(key)
        self.hot.append(key)
        if len(self.hot) > self.hot_max:
            self.main.append(self.hot.pop(0))

    def remove(self, key: Hashable) -> None:
        (self.hot if key in self.hot else self.main).remove(key)

    def victim(self) -> Hashable:
        return self.main.pop(0) if self.main else self.hot.pop(0)


MODELS: dict[str, Any] = {
    "lru": ListLRU,
    "fifo": ListFIFO,
    "lfu": ListLFU,
    "two_level": lambda: ListTwoLevel(hot_max=1),
    "tinylfu": None,
}


class CacheMachine(RuleBasedStateMachine):
    """Drives a MemoryCache and the model with the same operations and compares answers."""

    policy_name = "lru"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.cache = MemoryCache(self.policy_name, MAX_ENTRIES, MAX_BYTES, clock=self.clock)
        model = MODELS[self.policy_name]
        self.exact = model is not None
        self.order = model() if model is not None else None
        # key -> (value, size, expires_at): what the model says the cache holds (exact models),
        # or the latest put still valid for the key (tinylfu).
        self.held: dict[bytes, tuple[int, int, float | None]] = {}
        self.step = 0
        self.reads = 0

    def _expired(self, expires_at: float | None) -> bool:
        return expires_at is not None and expires_at <= self.clock.now()

    def _forget(self, key: bytes) -> None:
        if key in self.held:
            del self.held[key]
            if self.order is not None:
                self.order.remove(key)

    @rule(key=KEYS, size=SIZES, ttl=TTLS)
    def put(self, key: bytes, size: int, ttl: float | None) -> None:
        self.step += 1
        self.cache.put_nowait(key, self.step, size, ttl)
        if size > MAX_BYTES:
            self._forget(key)
            return
        expires_at = None if ttl is None else self.clock.now() + ttl
        known = key in self.held
        self.held[key] = (self.step, size, expires_at)
        if self.order is None:
            return
        if known:
            self.order.hit(key)
        else:
            self.order.insert(key)
        while len(self.held) > MAX_ENTRIES or self._bytes() > MAX_BYTES:
            del self.held[self.order.victim()]

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        self.reads += 1
        got = self.cache.get_nowait(key)
        entry = self.held.get(key)
        if entry is not None and self._expired(entry[2]):
            self._forget(key)
            entry = None
        if self.exact:
            assert got == (None if entry is None else entry[0])
            if entry is not None and self.order is not None:
                self.order.hit(key)
        else:
            assert got is None or (entry is not None and got == entry[0])

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.cache.delete_nowait(key)
        self._forget(key)
        assert self.cache.get_nowait(key) is None
        self.reads += 1

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.exact)
    @invariant()
    def same_contents(self) -> None:
        stats = self.cache.statistics()
        assert (stats.entries, stats.bytes) == (len(self.held), self._bytes())

    @invariant()
    def within_bounds(self) -> None:
        stats = self.cache.statistics()
        assert 0 <= stats.entries <= MAX_ENTRIES
        assert 0 <= stats.bytes <= MAX_BYTES
        assert stats.hits + stats.misses == self.reads

    def _bytes(self) -> int:
        return sum(size for _, size, _ in self.held.values())


def machine_for(name: str) -> type[CacheMachine]:
    return type(f"{name}Machine", (CacheMachine,), {"policy_name": name})


CHECK = settings(max_examples=60, stateful_step_count=40, deadline=None)

TestLRU = CHECK(machine_for("lru")).TestCase
TestFIFO = CHECK(machine_for("fifo")).TestCase
TestLFU = CHECK(machine_for("lfu")).TestCase
TestTwoLevel = CHECK(machine_for("two_level")).TestCase
TestTinyLFU = CHECK(machine_for("tinylfu")).TestCase
