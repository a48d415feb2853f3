"""Two levels: a key is promoted to the hot level on its second access, and hot keys outlive a
scan of new keys."""

from __future__ import annotations

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.two_level import TwoLevel


def test_second_access_promotes_to_hot() -> None:
    policy = TwoLevel(20)  # hot level: 2 entries
    policy.record_insert("a")
    assert not policy.is_hot("a")
    policy.record_hit("a")
    assert policy.is_hot("a")


def test_hot_overflow_demotes_to_the_recent_end_of_main() -> None:
    policy = TwoLevel(20)
    for k in "abcd":
        policy.record_insert(k)
    for k in "abc":
        policy.record_hit(k)  # hot holds 2: "a" goes back to main, after "d"
    assert not policy.is_hot("a")
    assert (policy.is_hot("b"), policy.is_hot("c")) == (True, True)
    assert [policy.evict() for _ in range(2)] == ["d", "a"]


def test_hot_keys_leave_only_when_main_is_empty() -> None:
    policy = TwoLevel(20)
    for k in "abc":
        policy.record_insert(k)
    policy.record_hit("a")
    assert [policy.evict() for _ in range(3)] == ["b", "c", "a"]


def test_hot_keys_survive_a_scan() -> None:
    cache = MemoryCache("two_level", max_entries=100)  # hot level: 10 entries
    hot = [f"hot{n}".encode() for n in range(10)]
    for k in hot:
        cache.put_nowait(k, k, size=1)
        cache.get_nowait(k)
    for n in range(10_000):
        cache.put_nowait(f"scan{n}".encode(), n, size=1)
    assert all(cache.get_nowait(k) == k for k in hot)


def test_lru_loses_the_same_keys_to_the_same_scan() -> None:
    """The contrast that shows what the hot level buys."""
    cache = MemoryCache("lru", max_entries=100)
    for n in range(10):
        k = f"hot{n}".encode()
        cache.put_nowait(k, k, size=1)
        cache.get_nowait(k)
    for n in range(10_000):
        cache.put_nowait(f"scan{n}".encode(), n, size=1)
    assert all(cache.get_nowait(f"hot{n}".encode()) is None for n in range(10))
