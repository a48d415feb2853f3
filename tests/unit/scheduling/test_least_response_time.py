"""Least response time: traffic follows speed, and new instances get tried."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dlproxy.scheduling.least_response_time import LeastResponseTime
from dlproxy.types import InferenceRequest, InstanceView

REQUEST = InferenceRequest(model="m", inputs={"x": np.array([b"a"], dtype=object)})


def run(policy: LeastResponseTime, latency: dict[str, float], requests: int) -> dict[str, int]:
    """Assign ``requests`` that all stay in flight; the in-flight count each instance ends with."""
    inflight = dict.fromkeys(latency, 0)
    for _ in range(requests):
        instances = [
            InstanceView(id=i, inflight=inflight[i], latency_ewma=latency[i]) for i in latency
        ]
        inflight[policy.choose(REQUEST, instances)] += 1
    return inflight


def test_steers_away_from_a_ten_times_slower_instance() -> None:
    counts = run(LeastResponseTime(), {"fast": 0.010, "slow": 0.100}, requests=1100)
    # Balanced when 0.010 * (fast + 1) ~ 0.100 * (slow + 1): the slow one gets about 1/11.
    assert counts["slow"] < 0.12 * 1100
    assert counts["slow"] > 0.05 * 1100  # slowed down, not shut out


def test_prefers_fewer_inflight_at_equal_latency() -> None:
    policy = LeastResponseTime()
    instances = [
        InstanceView(id="a", inflight=4, latency_ewma=0.02),
        InstanceView(id="b", inflight=1, queue_depth=1, latency_ewma=0.02),
        InstanceView(id="c", inflight=3, latency_ewma=0.02),
    ]
    assert policy.choose(REQUEST, instances) == "b"


def test_queued_work_counts_as_load() -> None:
    policy = LeastResponseTime()
    instances = [
        InstanceView(id="queued", inflight=1, queue_depth=5, latency_ewma=0.02),
        InstanceView(id="running", inflight=3, latency_ewma=0.02),
    ]
    assert policy.choose(REQUEST, instances) == "running"


def test_latency_and_load_trade_off() -> None:
    policy = LeastResponseTime()
    instances = [
        InstanceView(id="fast-busy", inflight=3, latency_ewma=0.01),  # 0.04
        InstanceView(id="slow-idle", inflight=0, latency_ewma=0.05),  # 0.05
    ]
    assert policy.choose(REQUEST, instances) == "fast-busy"


def test_a_new_instance_without_a_sample_is_tried() -> None:
    policy = LeastResponseTime()
    instances = [
        InstanceView(id="old-a", inflight=2, latency_ewma=0.01),
        InstanceView(id="old-b", inflight=2, latency_ewma=0.03),
        InstanceView(id="new", inflight=0, latency_ewma=0.0),  # scored as the mean, 0.02
    ]
    assert policy.choose(REQUEST, instances) == "new"


def test_a_new_instance_is_not_flooded() -> None:
    # Scored at the mean latency rather than at 0, it takes its share, not all the traffic.
    counts = run(LeastResponseTime(), {"old": 0.02, "new": 0.0}, requests=100)
    assert counts == {"old": 50, "new": 50}


def test_without_any_sample_it_is_least_connections_with_turns() -> None:
    policy = LeastResponseTime()
    idle = [InstanceView(id=i) for i in "abc"]
    assert Counter(policy.choose(REQUEST, idle) for _ in range(30)) == dict.fromkeys("abc", 10)
    busy_a = [InstanceView(id="a", inflight=2), InstanceView(id="b", inflight=1)]
    assert policy.choose(REQUEST, busy_a) == "b"
