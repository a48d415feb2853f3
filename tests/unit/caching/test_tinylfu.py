"""W-TinyLFU: admission by frequency, a sketch that ages, and a hot set that outlives scans.

Policy-level tests use int keys, whose hash() is the same in every run, so they are exact.
"""

from __future__ import annotations

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tinylfu import COUNTER_MAX, FrequencySketch, TinyLFU


def full_policy(capacity: int, hits_each: int) -> TinyLFU:
    """A full policy over keys 0..capacity-1, each read ``hits_each`` times."""
    policy = TinyLFU(capacity)
    for k in range(capacity):
        policy.record_insert(k)
    for _ in range(hits_each):
        for k in range(capacity):
            policy.record_hit(k)
    return policy


def test_filling_up_admits_everything() -> None:
    policy = TinyLFU(100)  # window 1, main 99
    for k in range(100):
        policy.record_insert(k)
    assert policy.segment_of(99) == "window"
    assert all(policy.segment_of(k) == "probation" for k in range(99))


def test_hits_move_probation_keys_to_protected() -> None:
    policy = full_policy(100, hits_each=1)
    assert all(policy.segment_of(k) in {"protected", "probation"} for k in range(99))
    assert sum(policy.segment_of(k) == "protected" for k in range(99)) == 79


def test_a_one_hit_newcomer_is_rejected_against_a_frequent_victim() -> None:
    policy = full_policy(100, hits_each=3)
    policy.record_insert(1000)
    assert policy.evict() == 99  # the window's older key: as frequent as the victim, a tie
    policy.record_insert(1001)
    assert policy.evict() == 1000
    assert policy.segment_of(1001) == "window"


def test_a_frequent_newcomer_is_admitted_over_a_rare_victim() -> None:
    policy = TinyLFU(100)
    for k in range(100):
        policy.record_insert(k)
    for _ in range(5):
        policy.sketch.increment(1000)  # seen often before, e.g. before an eviction
    policy.record_insert(1000)
    assert policy.evict() == 99  # the window's older key, seen once, loses to the victim's tie
    policy.record_insert(1001)
    assert policy.evict() == 0  # 1000 beats probation's oldest key and moves to main
    assert policy.segment_of(1000) == "probation"


def test_sketch_counts_and_saturates() -> None:
    sketch = FrequencySketch(64)
    for _ in range(5):
        sketch.increment(7)
    assert sketch.estimate(7) == 5
    assert sketch.estimate(8) == 0
    for _ in range(50):
        sketch.increment(7)
    assert sketch.estimate(7) == COUNTER_MAX


def test_sketch_halves_every_sample_period() -> None:
    sketch = FrequencySketch(64)
    for _ in range(12):
        sketch.increment(7)
    for _ in range(sketch.sample_size - 12 - 1):
        sketch.increment(8)
    assert sketch.estimate(7) == 12
    sketch.increment(8)  # the sample_size-th access: every counter halves
    assert (sketch.estimate(7), sketch.estimate(8)) == (6, 7)


def test_aging_lets_a_new_favourite_in() -> None:
    """Without aging, a key popular long ago would block newcomers forever."""
    policy = full_policy(100, hits_each=10)
    for _ in range(4):
        policy.sketch.halve()  # counts of 11 (capped 15) fall to 0
    for _ in range(2):
        policy.sketch.increment(1000)
    policy.record_insert(1000)
    policy.evict()  # the window's older key contends first
    policy.record_insert(1001)
    policy.evict()
    assert policy.segment_of(1000) == "probation"


def hot_hit_ratio(policy: str) -> float:
    """100 hot keys read in turn, one read per 10 keys of a scan 20 times the cache's size."""
    cache = MemoryCache(policy, max_entries=1000)
    hot = [f"hot{n}".encode() for n in range(100)]
    hits = reads = 0
    for n in range(20_000):
        cache.put_nowait(f"scan{n}".encode(), n, size=1)
        if n % 10 == 0:
            k = hot[(n // 10) % 100]
            if cache.get_nowait(k) is None:
                cache.put_nowait(k, k, size=1)
            elif n >= 2_000:
                hits += 1
            reads += n >= 2_000
    return hits / reads


def test_keeps_a_hot_set_through_a_scan() -> None:
    assert hot_hit_ratio("tinylfu") > 0.95
    assert hot_hit_ratio("lru") < 0.05
