"""FIFO: keys leave in the order they came, whatever their reads."""

from __future__ import annotations

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.fifo import FIFO


def test_hits_do_not_change_the_order() -> None:
    policy = FIFO(3)
    for k in "abc":
        policy.record_insert(k)
    for _ in range(5):
        policy.record_hit("a")
    assert [policy.evict() for _ in range(3)] == ["a", "b", "c"]


def test_removed_keys_are_skipped() -> None:
    policy = FIFO(3)
    for k in "abc":
        policy.record_insert(k)
    policy.record_remove("b")
    assert [policy.evict() for _ in range(2)] == ["a", "c"]


def test_cache_evicts_the_oldest_even_if_read() -> None:
    cache = MemoryCache("fifo", max_entries=2)
    cache.put_nowait(b"a", 1, size=1)
    cache.put_nowait(b"b", 2, size=1)
    assert cache.get_nowait(b"a") == 1
    cache.put_nowait(b"c", 3, size=1)
    assert cache.get_nowait(b"a") is None
    assert (cache.get_nowait(b"b"), cache.get_nowait(b"c")) == (2, 3)


def test_an_update_does_not_refresh_the_position() -> None:
    cache = MemoryCache("fifo", max_entries=2)
    cache.put_nowait(b"a", 1, size=1)
    cache.put_nowait(b"b", 2, size=1)
    cache.put_nowait(b"a", 10, size=1)
    cache.put_nowait(b"c", 3, size=1)
    assert cache.get_nowait(b"a") is None
