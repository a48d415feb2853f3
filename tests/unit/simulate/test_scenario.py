from __future__ import annotations

import numpy as np

from dlproxy.autoscaling.limits import Limits
from dlproxy.simulate.model import InstanceModel, default_profile
from dlproxy.simulate.scenario import Scenario, violation_share
from dlproxy.simulate.traces import Trace


def scenario(rates: list[float], slo: float = 0.1) -> Scenario:
    trace = Trace("t", np.array(rates, dtype=float))
    return Scenario(trace, InstanceModel(default_profile()), Limits(), slo, seed=3)


def test_static_size_is_the_fewest_that_meet_the_slo() -> None:
    s = scenario([100.0])
    size = s.static_size(1000.0)
    steady = scenario([1000.0] * 120)
    assert violation_share(steady.run_static(size), 0.1) <= 0.01
    assert violation_share(steady.run_static(size - 1), 0.1) > 0.01


def test_static_size_grows_with_the_rate_and_the_tighter_slo() -> None:
    loose, tight = scenario([100.0], 0.1), scenario([100.0], 0.01)
    sizes = [loose.static_size(rate) for rate in (50.0, 300.0, 800.0)]
    assert sizes[0] == 1
    assert sizes == sorted(sizes)
    assert sizes[2] > sizes[1]
    assert tight.static_size(800.0) > sizes[2]


def test_every_policy_starts_from_the_same_pool() -> None:
    s = scenario([600.0] * 20 + [100.0] * 20)
    assert s.initial_instances() == 3  # 600 req/s x 2.9 ms at 70%
    outcome = s.run_policy("predictive")
    assert outcome.timeline.ready[0] + outcome.timeline.starting[0] >= 1
    assert s.arrivals is s.arrivals  # drawn once, shared by every run


def test_violations_count_the_refused_and_the_late() -> None:
    s = scenario([3000.0] * 20)
    outcome = s.run_static(1)
    share = violation_share(outcome, 0.1)
    late = np.count_nonzero(outcome.latency > 0.1)
    total = outcome.accepted.size + outcome.refused.size
    assert share == (late + outcome.refused.size) / total
    assert share > 0.5
