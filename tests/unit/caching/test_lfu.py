"""LFU: the least frequently used key leaves first; among equals, the least recently counted."""

from __future__ import annotations

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.lfu import LFU


def filled(hits: dict[str, int]) -> LFU:
    policy = LFU(len(hits))
    for k, n in hits.items():
        policy.record_insert(k)
        for _ in range(n):
            policy.record_hit(k)
    return policy


def test_evicts_in_increasing_frequency() -> None:
    policy = filled({"a": 3, "b": 0, "c": 5, "d": 1})
    assert [policy.evict() for _ in range(4)] == ["b", "d", "a", "c"]


def test_ties_go_to_the_key_that_reached_the_count_first() -> None:
    policy = filled({"a": 0, "b": 0, "c": 0})
    policy.record_hit("a")
    policy.record_hit("b")
    policy.record_hit("c")
    policy.record_hit("a")
    policy.record_hit("b")
    # counts: a=3, b=3, c=2; a reached 3 before b
    assert [policy.evict() for _ in range(3)] == ["c", "a", "b"]


def test_counts_follow_hits() -> None:
    policy = filled({"a": 4, "b": 0})
    assert (policy.count("a"), policy.count("b")) == (5, 1)


def test_removing_the_only_least_frequent_key_keeps_the_order() -> None:
    policy = filled({"a": 0, "b": 2, "c": 2, "d": 7})
    policy.record_remove("a")
    policy.record_remove("c")
    policy.record_insert("e")
    assert [policy.evict() for _ in range(3)] == ["e", "b", "d"]


def test_a_new_key_starts_again_at_one() -> None:
    policy = filled({"a": 9})
    assert policy.evict() == "a"
    policy.record_insert("a")
    assert policy.count("a") == 1


def test_cache_keeps_the_frequent_key_over_the_recent_one() -> None:
    cache = MemoryCache("lfu", max_entries=2)
    cache.put_nowait(b"often", 1, size=1)
    for _ in range(3):
        cache.get_nowait(b"often")
    cache.put_nowait(b"once", 2, size=1)
    cache.put_nowait(b"new", 3, size=1)
    assert cache.get_nowait(b"once") is None
    assert cache.get_nowait(b"often") == 1
