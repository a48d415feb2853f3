"""Least connections: the least outstanding work wins, and equal instances share the traffic."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dlproxy.scheduling.least_connections import LeastConnections
from dlproxy.types import InferenceRequest, InstanceView

REQUEST = InferenceRequest(model="m", inputs={"x": np.array([b"a"], dtype=object)})


def views(*loads: tuple[int, int]) -> list[InstanceView]:
    """One instance per (inflight, queue_depth) pair, named i0, i1, ..."""
    return [InstanceView(id=f"i{n}", inflight=f, queue_depth=q) for n, (f, q) in enumerate(loads)]


def test_picks_the_fewest_inflight_plus_queued() -> None:
    policy = LeastConnections()
    # i1 has the fewest in flight but the longest queue; i2 has the least in total.
    instances = views((4, 0), (1, 5), (2, 1), (4, 4))
    assert {policy.choose(REQUEST, instances) for _ in range(10)} == {"i2"}


def test_ties_are_taken_in_turn() -> None:
    policy = LeastConnections()
    instances = views((1, 0), (0, 0), (2, 0), (0, 0), (0, 0))
    picks = [policy.choose(REQUEST, instances) for _ in range(6)]
    assert picks == ["i1", "i3", "i4", "i1", "i3", "i4"]


def test_equal_instances_share_load_as_it_builds_up() -> None:
    policy = LeastConnections()
    loads = {"a": 0, "b": 0, "c": 0}
    for _ in range(300):
        instances = [InstanceView(id=i, inflight=n) for i, n in loads.items()]
        loads[policy.choose(REQUEST, instances)] += 1
    assert loads == {"a": 100, "b": 100, "c": 100}


def test_skips_an_idle_unhealthy_instance() -> None:
    policy = LeastConnections()
    instances = [InstanceView(id="down", healthy=False), InstanceView(id="up", inflight=9)]
    assert Counter(policy.choose(REQUEST, instances) for _ in range(10)) == {"up": 10}
