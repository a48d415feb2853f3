"""The suite every registered in-memory cache policy must pass, whatever it chooses to evict."""

from __future__ import annotations

import random

import pytest

from dlproxy.caching.base import (
    POLICIES,
    CacheStatistics,
    EvictionPolicy,
    MemoryCache,
    create_memory_cache,
)
from dlproxy.clock import ManualClock
from dlproxy.plugins import load_named


@pytest.fixture(params=sorted(POLICIES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def key(n: int) -> bytes:
    return f"k{n}".encode()


async def test_put_then_get_round_trip(name: str) -> None:
    cache = create_memory_cache(name, max_entries=10)
    await cache.put(b"a", {"v": 1}, size=3)
    assert await cache.get(b"a") == {"v": 1}
    assert cache.get_nowait(b"a") == {"v": 1}
    await cache.close()


def test_miss_returns_none_and_is_counted(name: str) -> None:
    cache = create_memory_cache(name, max_entries=10)
    assert cache.get_nowait(b"absent") is None
    assert cache.statistics().misses == 1


async def test_delete_forgets_the_key(name: str) -> None:
    cache = create_memory_cache(name, max_entries=10)
    cache.put_nowait(b"a", 1, size=5)
    cache.put_nowait(b"b", 2, size=5)
    await cache.delete(b"a")
    await cache.delete(b"never-put")
    assert cache.get_nowait(b"a") is None
    assert cache.get_nowait(b"b") == 2
    stats = cache.statistics()
    assert (stats.entries, stats.bytes) == (1, 5)


def test_no_eviction_below_the_entry_bound(name: str) -> None:
    cache = create_memory_cache(name, max_entries=50)
    for n in range(50):
        cache.put_nowait(key(n), n, size=1)
    assert all(cache.get_nowait(key(n)) == n for n in range(50))
    assert cache.statistics().evictions == 0


def test_entry_bound_is_never_exceeded(name: str) -> None:
    cache = create_memory_cache(name, max_entries=20)
    rng = random.Random(1)
    for _ in range(2000):
        k = key(int(rng.paretovariate(1.0)) % 200)
        if cache.get_nowait(k) is None:
            cache.put_nowait(k, k, size=1)
        assert cache.statistics().entries <= 20
    stats = cache.statistics()
    assert stats.entries == 20
    assert stats.evictions + stats.rejections == stats.misses - 20


def test_byte_bound_is_never_exceeded(name: str) -> None:
    cache = create_memory_cache(name, max_entries=1000, max_bytes=500)
    rng = random.Random(2)
    for _ in range(2000):
        k = key(rng.randrange(300))
        if cache.get_nowait(k) is None:
            cache.put_nowait(k, k, size=rng.randrange(1, 120))
        stats = cache.statistics()
        assert 0 <= stats.bytes <= 500
        assert stats.entries <= 1000


def test_bytes_follow_updates_and_deletes(name: str) -> None:
    cache = create_memory_cache(name, max_entries=10, max_bytes=100)
    cache.put_nowait(b"a", "small", size=10)
    cache.put_nowait(b"a", "large", size=40)
    assert cache.get_nowait(b"a") == "large"
    stats = cache.statistics()
    assert (stats.entries, stats.bytes) == (1, 40)
    cache.put_nowait(b"a", "tiny", size=1)
    assert cache.statistics().bytes == 1
    cache.delete_nowait(b"a")
    assert cache.statistics().bytes == 0


def test_ttl_expires_entries(name: str) -> None:
    clock = ManualClock()
    cache = create_memory_cache(name, max_entries=10, default_ttl=5.0, clock=clock)
    cache.put_nowait(b"default", 1, size=1)
    cache.put_nowait(b"short", 2, size=1, ttl=1.0)
    cache.put_nowait(b"long", 3, size=1, ttl=100.0)
    clock.advance(2.0)
    assert cache.get_nowait(b"short") is None
    assert cache.get_nowait(b"default") == 1
    clock.advance(3.0)
    assert cache.get_nowait(b"default") is None
    assert cache.get_nowait(b"long") == 3
    stats = cache.statistics()
    assert (stats.expirations, stats.entries, stats.hits, stats.misses) == (2, 1, 2, 2)


def test_put_renews_the_ttl(name: str) -> None:
    clock = ManualClock()
    cache = create_memory_cache(name, max_entries=10, clock=clock)
    cache.put_nowait(b"a", 1, size=1, ttl=1.0)
    clock.advance(0.9)
    cache.put_nowait(b"a", 2, size=1, ttl=1.0)
    clock.advance(0.9)
    assert cache.get_nowait(b"a") == 2


def test_expired_keys_can_be_put_again(name: str) -> None:
    clock = ManualClock()
    cache = create_memory_cache(name, max_entries=3, clock=clock)
    for n in range(3):
        cache.put_nowait(key(n), n, size=1, ttl=1.0)
    clock.advance(2.0)
    assert [cache.get_nowait(key(n)) for n in range(3)] == [None, None, None]
    for n in range(3):
        cache.put_nowait(key(n), n * 10, size=1)
    assert [cache.get_nowait(key(n)) for n in range(3)] == [0, 10, 20]


def test_oversized_value_is_not_stored(name: str) -> None:
    cache = create_memory_cache(name, max_entries=10, max_bytes=100)
    cache.put_nowait(b"small", 1, size=10)
    cache.put_nowait(b"huge", 2, size=101)
    assert cache.get_nowait(b"huge") is None
    assert cache.get_nowait(b"small") == 1
    stats = cache.statistics()
    assert (stats.entries, stats.bytes, stats.rejections, stats.evictions) == (1, 10, 1, 0)


def test_oversized_update_drops_the_older_value(name: str) -> None:
    cache = create_memory_cache(name, max_entries=10, max_bytes=100)
    cache.put_nowait(b"a", "old", size=10)
    cache.put_nowait(b"a", "new", size=500)
    assert cache.get_nowait(b"a") is None
    assert cache.statistics().bytes == 0


def test_update_changes_the_value_not_the_count(name: str) -> None:
    cache = create_memory_cache(name, max_entries=2)
    cache.put_nowait(b"a", 1, size=1)
    cache.put_nowait(b"a", 2, size=1)
    cache.put_nowait(b"b", 3, size=1)
    assert (cache.get_nowait(b"a"), cache.get_nowait(b"b")) == (2, 3)
    assert cache.statistics().evictions == 0


def test_statistics_count_hits_misses_and_evictions(name: str) -> None:
    cache = create_memory_cache(name, max_entries=4)
    for n in range(10):
        cache.put_nowait(key(n), n, size=2)
    hits = sum(cache.get_nowait(key(n)) is not None for n in range(10))
    stats = cache.statistics()
    assert stats == CacheStatistics(
        hits=hits,
        misses=10 - hits,
        entries=4,
        bytes=8,
        evictions=6 - stats.rejections,
        expirations=0,
        rejections=stats.rejections,
    )
    assert hits == 4


def test_values_are_never_mixed_up(name: str) -> None:
    cache = create_memory_cache(name, max_entries=30, max_bytes=200)
    rng = random.Random(3)
    last: dict[bytes, int] = {}
    for step in range(3000):
        k = key(rng.randrange(100))
        if rng.random() < 0.3:
            cache.put_nowait(k, step, size=rng.randrange(1, 20))
            last[k] = step
        elif rng.random() < 0.05:
            cache.delete_nowait(k)
            last.pop(k, None)
        else:
            got = cache.get_nowait(k)
            assert got is None or got == last[k]


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown cache policy 'nope'.*lru"):
        create_memory_cache("nope", max_entries=1)


@pytest.mark.parametrize("kwargs", [{"max_entries": 0}, {"max_entries": 1, "max_bytes": 0}])
def test_bounds_must_be_positive(name: str, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        create_memory_cache(name, **kwargs)


def test_a_policy_object_can_be_passed_in(name: str) -> None:
    policy: EvictionPolicy = load_named(POLICIES, name, "cache policy")(2)
    cache = MemoryCache(policy, max_entries=2)
    cache.put_nowait(b"a", 1, size=1)
    assert cache.get_nowait(b"a") == 1


def test_policy_evicts_every_tracked_key_exactly_once(name: str) -> None:
    """The policy alone: whatever order it picks, it gives back exactly the keys it holds."""
    policy: EvictionPolicy = load_named(POLICIES, name, "cache policy")(8)
    rng = random.Random(4)
    held: set[int] = set()
    for n in range(200):
        policy.record_insert(n)
        held.add(n)
        for k in rng.sample(sorted(held), k=min(3, len(held))):
            policy.record_hit(k)
        if rng.random() < 0.2:
            gone = rng.choice(sorted(held))
            policy.record_remove(gone)
            held.discard(gone)
        while len(held) > 8:
            victim = policy.evict()
            assert victim in held
            held.discard(victim)
    while held:
        victim = policy.evict()
        assert victim in held
        held.discard(victim)
