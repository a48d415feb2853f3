"""LRU: the least recently used key leaves first, and a read counts as a use."""

from __future__ import annotations

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.lru import LRU


def test_evicts_in_insertion_order_without_reads() -> None:
    policy = LRU(3)
    for k in "abc":
        policy.record_insert(k)
    assert [policy.evict() for _ in range(3)] == ["a", "b", "c"]


def test_a_hit_makes_a_key_the_most_recent() -> None:
    policy = LRU(3)
    for k in "abc":
        policy.record_insert(k)
    policy.record_hit("a")
    policy.record_hit("b")
    assert [policy.evict() for _ in range(3)] == ["c", "a", "b"]


def test_removed_keys_are_never_evicted() -> None:
    policy = LRU(3)
    for k in "abc":
        policy.record_insert(k)
    policy.record_remove("a")
    assert [policy.evict() for _ in range(2)] == ["b", "c"]


def test_cache_keeps_the_recently_read_key() -> None:
    cache = MemoryCache("lru", max_entries=2)
    cache.put_nowait(b"a", 1, size=1)
    cache.put_nowait(b"b", 2, size=1)
    cache.get_nowait(b"a")
    cache.put_nowait(b"c", 3, size=1)
    assert cache.get_nowait(b"b") is None
    assert (cache.get_nowait(b"a"), cache.get_nowait(b"c")) == (1, 3)
