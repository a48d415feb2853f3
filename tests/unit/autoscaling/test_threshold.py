from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.threshold import Threshold
from dlproxy.clock import ManualClock

MakeSnapshot = Callable[..., Snapshot]


def answer(policy: Threshold, make: MakeSnapshot, work: float, count: int, now: float) -> int:
    """The policy's count for ``work`` (busy cores' worth) spread over ``count`` instances."""
    return policy.desired(make(ready=count, cpu=min(1.0, work / count), memory=0.0), now)


@pytest.mark.parametrize("work", np.linspace(0.05, 12.0, 60).tolist())
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 12])
def test_a_changed_count_is_one_the_rule_then_keeps(
    make_snapshot: MakeSnapshot, work: float, count: int
) -> None:
    # The hysteresis property: after any change, the same load gives the same count again,
    # so the pool never flaps between the two thresholds.
    if work / count > 1.0:
        return  # CPU saturates at 1: the true load is unknown, the rule only says "more"
    policy = Threshold(window=0.0)
    new = answer(policy, make_snapshot, work, count, 0.0)
    again = answer(policy, make_snapshot, work, new, 1.0)
    assert again == new
    if new > count:
        assert work / count > policy.upper
        assert work / new <= (policy.upper + policy.lower) / 2 + 1e-9
    elif new < count:
        assert work / count < policy.lower


def test_load_between_the_thresholds_never_moves_the_count(make_snapshot: MakeSnapshot) -> None:
    policy, clock, rng = Threshold(), ManualClock(), np.random.default_rng(3)
    for _ in range(1000):
        clock.advance(1.0)
        use = rng.uniform(policy.lower + 0.02, policy.upper - 0.02)  # wandering, inside the band
        assert policy.desired(make_snapshot(ready=4, cpu=use), clock.now()) == 4


def test_noisy_load_near_the_upper_threshold_changes_the_count_once(
    make_snapshot: MakeSnapshot,
) -> None:
    policy, clock, rng = Threshold(), ManualClock(), np.random.default_rng(7)
    count, counts = 4, [4]
    for _ in range(1200):
        clock.advance(1.0)
        work = 4 * 0.76 * (1 + 0.08 * rng.standard_normal())  # around the upper threshold
        count = answer(policy, make_snapshot, work, count, clock.now())
        counts.append(count)
    changes = [b for a, b in itertools.pairwise(counts) if a != b]
    assert len(changes) == 1  # up once, to bring use back to the middle; then it holds
    assert changes[0] in (6, 7)


def test_one_busy_tick_is_smoothed_away(make_snapshot: MakeSnapshot) -> None:
    policy = Threshold(window=5.0)
    for t in range(30):
        assert policy.desired(make_snapshot(ready=4, cpu=0.5), float(t)) == 4
    assert policy.desired(make_snapshot(ready=4, cpu=1.0), 30.0) == 4


def test_memory_counts_like_cpu(make_snapshot: MakeSnapshot) -> None:
    policy = Threshold(window=0.0)
    assert policy.desired(make_snapshot(ready=2, cpu=0.4, memory=0.9), 0.0) > 2


def test_starting_instances_are_not_asked_for_twice(make_snapshot: MakeSnapshot) -> None:
    policy = Threshold(window=0.0)
    first = policy.desired(make_snapshot(ready=2, cpu=1.0), 0.0)
    # Still pinned while the new ones start: the count already includes them.
    assert policy.desired(make_snapshot(ready=2, starting=first - 2, cpu=1.0), 1.0) == first


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="lower < upper"):
        Threshold(upper=0.3, lower=0.5)
