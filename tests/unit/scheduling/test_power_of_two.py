"""Power of two choices: the lighter of two random probes, reproducible under a seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dlproxy.scheduling.power_of_two import PowerOfTwo
from dlproxy.types import InferenceRequest, InstanceView

REQUEST = InferenceRequest(model="m", inputs={"x": np.array([b"a"], dtype=object)})


def views(*loads: int) -> list[InstanceView]:
    return [InstanceView(id=f"i{n}", inflight=load) for n, load in enumerate(loads)]


def test_of_two_instances_the_lighter_always_wins() -> None:
    # With two instances both are always sampled, so the comparison decides every time.
    for seed in range(50):
        policy = PowerOfTwo(seed=seed)
        assert policy.choose(REQUEST, views(3, 1)) == "i1"
        assert policy.choose(REQUEST, views(0, 2)) == "i0"


def test_the_heaviest_of_three_is_never_chosen_and_shares_follow_the_pairs() -> None:
    counts: Counter[str] = Counter()
    for seed in range(200):
        policy = PowerOfTwo(seed=seed)
        counts.update(policy.choose(REQUEST, views(0, 1, 2)) for _ in range(30))
    total = sum(counts.values())
    # Any pair of distinct instances holds a lighter one than i2, so i2 never wins. i0 wins the
    # pairs {i0, i1} and {i0, i2} (2/3 of draws), i1 only {i1, i2} (1/3).
    assert counts["i2"] == 0
    assert counts["i0"] / total == pytest.approx(2 / 3, abs=0.03)
    assert counts["i1"] / total == pytest.approx(1 / 3, abs=0.03)


def test_samples_two_distinct_instances() -> None:
    # Were the same instance ever sampled twice, the heavy one would sometimes win on its own.
    policy = PowerOfTwo(seed=7)
    instances = views(5, 0)
    assert {policy.choose(REQUEST, instances) for _ in range(1000)} == {"i1"}


def test_equal_loads_are_spread_uniformly() -> None:
    policy = PowerOfTwo(seed=1)
    counts = Counter(policy.choose(REQUEST, views(0, 0, 0, 0)) for _ in range(4000))
    assert all(abs(n - 1000) < 120 for n in counts.values()), counts


def test_a_seeded_run_is_reproducible() -> None:
    instances = views(1, 1, 0, 2, 1, 0)
    a, b = PowerOfTwo(seed=42), PowerOfTwo(seed=42)
    run_a = [a.choose(REQUEST, instances) for _ in range(200)]
    run_b = [b.choose(REQUEST, instances) for _ in range(200)]
    assert run_a == run_b
    other = PowerOfTwo(seed=43)
    assert [other.choose(REQUEST, instances) for _ in range(200)] != run_a
