"""The cache interface, the eviction-policy interface, and the in-memory mechanism they share.

A policy module only decides *which* key leaves; ``MemoryCache`` owns everything else once: the
key -> entry table, entry and byte accounting, TTL, statistics and the eviction loop. So a new
policy is one small class, and the bounds hold for every policy by construction.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from dlproxy.clock import Clock, MonotonicClock
from dlproxy.plugins import load_named

POLICIES: dict[str, str] = {
    "lru": "dlproxy.caching.lru:LRU",
    "lfu": "dlproxy.caching.lfu:LFU",
    "fifo": "dlproxy.caching.fifo:FIFO",
    "two_level": "dlproxy.caching.two_level:TwoLevel",
    "tinylfu": "dlproxy.caching.tinylfu:TinyLFU",
}


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """A snapshot of a cache's counters (the trio convention: an immutable record)."""

    hits: int
    misses: int
    entries: int
    bytes: int
    evictions: int
    """Entries dropped to respect a bound (not counting rejected newcomers)."""
    expirations: int
    """Entries found past their TTL (on a read, or when chosen for eviction)."""
    rejections: int
    """Values not kept at all: larger than the byte bound, or the newcomer itself chosen as the
    victim (an admission policy's refusal; a key refused after a stay in a window counts as an
    eviction)."""


class Cache(Protocol):
    """What the gateway uses. Async so that a networked level (Redis) fits the same interface."""

    async def get(self, key: bytes) -> Any | None: ...

    async def put(self, key: bytes, value: Any, size: int, ttl: float | None = None) -> None: ...

    async def delete(self, key: bytes) -> None: ...

    def statistics(self) -> CacheStatistics: ...

    async def close(self) -> None: ...


class EvictionPolicy(Protocol):
    """The only thing a policy module implements. Constructed as ``Policy(capacity)``, where
    ``capacity`` is the entry bound (for sizing windows, segments and sketches).

    The mechanism tells the policy about every key that enters, is read, or leaves for a reason
    of its own (delete, TTL); the policy answers ``evict`` with the key that must leave now,
    having already removed it from its own structures. It may return the key just inserted:
    that is how an admission policy refuses a newcomer. Every method must be O(1) or O(log n).
    """

    def record_insert(self, key: Hashable) -> None: ...

    def record_hit(self, key: Hashable) -> None: ...

    def record_remove(self, key: Hashable) -> None: ...

    def evict(self) -> Hashable: ...


class _Entry:
    __slots__ = ("expires_at", "size", "value")

    def __init__(self, value: Any, size: int, expires_at: float | None) -> None:
        self.value = value
        self.size = size
        self.expires_at = expires_at


_MONOTONIC = MonotonicClock()


class MemoryCache:
    """An in-process cache bounded by entries and (optionally) bytes, with per-entry TTL.

    ``*_nowait`` methods never block (the trio convention); the async methods wrap them so the
    gateway sees one ``Cache`` interface for every level. Expired entries are found lazily, on
    the read that would have returned them: no timer, no scan.
    """

    def __init__(
        self,
        policy: str | EvictionPolicy,
        max_entries: int,
        max_bytes: int | None = None,
        default_ttl: float | None = None,
        clock: Clock = _MONOTONIC,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1 (got {max_entries}).")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 or None (got {max_bytes}).")
        if default_ttl is not None and default_ttl <= 0:
            raise ValueError(f"default_ttl must be positive or None (got {default_ttl}).")
        self._policy: EvictionPolicy = (
            load_named(POLICIES, policy, "cache policy")(max_entries)
            if isinstance(policy, str)
            else policy
        )
        self._max_entries = max_entries
        self._max_bytes: float = math.inf if max_bytes is None else max_bytes
        self._default_ttl = default_ttl
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        self._rejections = 0

    def get_nowait(self, key: bytes) -> Any | None:
        """The cached value, or None on a miss (an expired entry is a miss, and is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock.now():
            self._drop(key, entry)
            self._policy.record_remove(key)
            self._expirations += 1
            self._misses += 1
            return None
        self._policy.record_hit(key)
        self._hits += 1
        return entry.value

    def put_nowait(self, key: bytes, value: Any, size: int, ttl: float | None = None) -> None:
        """Store ``value`` (``size`` bytes) for ``ttl`` seconds (default: the cache's), evicting
        as the policy chooses until both bounds hold. A value larger than the byte bound is not
        stored, and an older value for the key is dropped so a read never returns it."""
        if size < 0:
            raise ValueError(f"size must not be negative (got {size} for key {key!r}).")
        ttl = self._default_ttl if ttl is None else ttl
        expires_at = None if ttl is None else self._clock.now() + ttl
        old = self._entries.get(key)
        if size > self._max_bytes:
            if old is not None:
                self.delete_nowait(key)
            self._rejections += 1
            return
        if old is not None:
            self._bytes += size - old.size
            old.value, old.size, old.expires_at = value, size, expires_at
            self._policy.record_hit(key)
        else:
            self._entries[key] = _Entry(value, size, expires_at)
            self._bytes += size
            self._policy.record_insert(key)
        self._evict_to_bounds(key if old is None else None)

    def delete_nowait(self, key: bytes) -> None:
        """Forget ``key`` if present."""
        entry = self._entries.get(key)
        if entry is not None:
            self._drop(key, entry)
            self._policy.record_remove(key)

    def _evict_to_bounds(self, newcomer: Hashable | None) -> None:
        # Invariant: the policy tracks exactly the keys of self._entries, so every victim it
        # returns is present here.
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            victim = self._policy.evict()
            entry = self._entries[victim]
            self._drop(victim, entry)
            if victim == newcomer:
                self._rejections += 1
            elif entry.expires_at is not None and entry.expires_at <= self._clock.now():
                self._expirations += 1
            else:
                self._evictions += 1

    def _drop(self, key: Hashable, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= entry.size

    async def get(self, key: bytes) -> Any | None:
        return self.get_nowait(key)

    async def put(self, key: bytes, value: Any, size: int, ttl: float | None = None) -> None:
        self.put_nowait(key, value, size, ttl)

    async def delete(self, key: bytes) -> None:
        self.delete_nowait(key)

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            entries=len(self._entries),
            bytes=self._bytes,
            evictions=self._evictions,
            expirations=self._expirations,
            rejections=self._rejections,
        )

    async def close(self) -> None:
        """Nothing to release: the entries go with the object."""


def create_memory_cache(
    name: str,
    max_entries: int,
    max_bytes: int | None = None,
    default_ttl: float | None = None,
    clock: Clock = _MONOTONIC,
) -> MemoryCache:
    """An in-memory cache whose eviction policy is the one registered under ``name``."""
    return MemoryCache(name, max_entries, max_bytes, default_ttl, clock)
