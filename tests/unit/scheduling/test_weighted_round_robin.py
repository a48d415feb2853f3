"""Smooth weighted round robin: exact shares per cycle, interleaved rather than in bursts."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from dlproxy.scheduling.weighted_round_robin import WeightedRoundRobin
from dlproxy.types import InferenceRequest, InstanceView

REQUEST = InferenceRequest(model="m", inputs={"x": np.array([b"a"], dtype=object)})


def views(**weights: float) -> list[InstanceView]:
    return [InstanceView(id=i, weight=w) for i, w in weights.items()]


def picks(policy: WeightedRoundRobin, instances: list[InstanceView], n: int) -> list[str]:
    return [policy.choose(REQUEST, instances) for _ in range(n)]


def longest_run(sequence: list[str]) -> int:
    longest = run = 1
    for previous, current in pairwise(sequence):
        run = run + 1 if current == previous else 1
        longest = max(longest, run)
    return longest


def test_nginx_example_is_smooth() -> None:
    sequence = picks(WeightedRoundRobin(), views(a=5, b=1, c=1), 14)
    assert sequence == list("aabacaa") * 2
    assert longest_run(sequence) < 5  # plain weighted round robin would send a a a a a


@pytest.mark.parametrize(
    "weights",
    [
        {"a": 5, "b": 1, "c": 1},
        {"a": 1, "b": 1},
        {"a": 3, "b": 2, "c": 7, "d": 1},
        {"a": 10, "b": 1},
        {"a": 4, "b": 4, "c": 2},
    ],
)
def test_every_cycle_has_exact_counts(weights: dict[str, int]) -> None:
    policy = WeightedRoundRobin()
    instances = views(**weights)
    cycle = sum(weights.values())
    for _ in range(5):
        assert Counter(picks(policy, instances, cycle)) == weights


def test_float_weights_get_exact_shares() -> None:
    policy = WeightedRoundRobin()
    instances = views(a=2.5, b=1.5, c=1.0)  # scaled exactly to 5, 3, 2: a cycle of 10
    for _ in range(5):
        assert Counter(picks(policy, instances, 10)) == {"a": 5, "b": 3, "c": 2}


def test_inexact_float_weights_keep_their_proportions() -> None:
    policy = WeightedRoundRobin()
    counts = Counter(picks(policy, views(a=0.1, b=0.2, c=0.3), 6000))
    assert counts == {"a": 1000, "b": 2000, "c": 3000}


def test_zero_weight_gets_nothing_unless_all_are_zero() -> None:
    policy = WeightedRoundRobin()
    assert set(picks(policy, views(a=0, b=2), 10)) == {"b"}
    assert Counter(picks(policy, views(a=0, b=0.0), 10)) == {"a": 5, "b": 5}


def test_unhealthy_instances_are_left_out_of_the_cycle() -> None:
    policy = WeightedRoundRobin()
    instances = [*views(a=3, b=1), InstanceView(id="c", weight=100, healthy=False)]
    assert Counter(picks(policy, instances, 8)) == {"a": 6, "b": 2}


def test_membership_changes_keep_exact_shares_afterwards() -> None:
    policy = WeightedRoundRobin()
    picks(policy, views(a=5, b=1, c=1), 3)  # stop mid-cycle
    # c leaves, d joins: the survivors keep their state, d starts at zero, c's is dropped.
    changed = views(a=5, b=1, d=2)
    picks(policy, changed, 8)  # one cycle to settle the leftover state
    for _ in range(4):
        counts = Counter(picks(policy, changed, 8))
        assert sum(counts.values()) == 8
        assert all(abs(counts[i] - w) <= 1 for i, w in {"a": 5, "b": 1, "d": 2}.items())
    assert Counter(picks(policy, changed, 8 * 100)) == {"a": 500, "b": 100, "d": 200}


def test_a_weight_change_takes_effect() -> None:
    policy = WeightedRoundRobin()
    picks(policy, views(a=1, b=1), 5)
    assert Counter(picks(policy, views(a=3, b=1), 400)) == {"a": 300, "b": 100}


def test_a_non_finite_weight_is_refused_naming_the_instance() -> None:
    with pytest.raises(ValueError, match="'a' has weight inf"):
        WeightedRoundRobin().choose(REQUEST, views(a=float("inf"), b=1))
