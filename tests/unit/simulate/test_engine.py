from __future__ import annotations

import numpy as np
import pytest

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.limits import Limits
from dlproxy.simulate.engine import Outcome, Simulation, Static
from dlproxy.simulate.model import InstanceModel, ServiceProfile, default_profile
from dlproxy.simulate.traces import Trace

MODEL = InstanceModel(default_profile())


def simulate(
    rates: list[float] | np.ndarray,
    policy: object,
    initial: int = 1,
    model: InstanceModel = MODEL,
    limits: Limits | None = None,
    seed: int = 1,
) -> Outcome:
    trace = Trace("t", np.asarray(rates, dtype=float))
    limits = limits or Limits(down_cooldown=0.0)
    return Simulation(
        trace.arrivals(seed), policy, model, trace.duration, limits, initial, seed=seed
    ).run()  # type: ignore[arg-type]


class Recorder:
    """A policy that asks for a scripted count and remembers what it was shown."""

    def __init__(self, plan: dict[float, int], start: int = 1) -> None:
        self.plan, self.count = plan, start
        self.seen: list[tuple[float, Snapshot]] = []

    def desired(self, snapshot: Snapshot, now: float) -> int:
        self.seen.append((now, snapshot))
        self.count = self.plan.get(now, self.count)
        return self.count


def test_every_request_is_answered_once_or_refused() -> None:
    outcome = simulate([200.0] * 30 + [3000.0] * 30 + [200.0] * 30, Static(2), initial=2)
    arrivals = Trace("t", np.array([200.0] * 30 + [3000.0] * 30 + [200.0] * 30)).arrivals(1)
    assert outcome.accepted.size + outcome.refused.size == arrivals.size
    assert np.array_equal(np.sort(np.concatenate([outcome.accepted, outcome.refused])), arrivals)
    assert outcome.latency.size == outcome.accepted.size
    assert np.all(np.isfinite(outcome.latency))
    assert outcome.refused.size > 0  # 3,000 req/s against about 860 of capacity


def test_a_full_queue_refuses_at_its_bound() -> None:
    model = InstanceModel(default_profile(), max_queue=50)
    outcome = simulate([5000.0] * 20, Static(1), model=model)
    # A queue of 50 ahead of a batch of at most 32 (74 ms): no admitted request waits longer.
    assert outcome.latency.max() < 4 * default_profile().batch_time(32) + 0.05
    assert outcome.refused.size > 0.8 * 5000 * 20 * 0.85


def test_light_load_is_served_at_batch_one_speed() -> None:
    outcome = simulate([20.0] * 60, Static(2), initial=2)
    assert np.median(outcome.latency) == pytest.approx(0.0029, rel=0.15)


def test_batching_serves_more_than_batch_one_speed() -> None:
    outcome = simulate([420.0] * 60, Static(1))  # beyond 345/s at batch 1, below 430 at 32
    assert outcome.refused.size == 0
    assert np.percentile(outcome.latency, 99) < 0.5


def test_static_instance_seconds_and_determinism() -> None:
    first = simulate([300.0] * 100, Static(3), initial=3)
    second = simulate([300.0] * 100, Static(3), initial=3)
    assert first.instance_seconds == 300.0
    assert np.array_equal(first.latency, second.latency)


def test_new_instances_are_ready_only_after_the_startup_time() -> None:
    model = InstanceModel(default_profile(), startup_time=5.0)
    outcome = simulate([100.0] * 30, Recorder({10.0: 3}), model=model)
    line = outcome.timeline
    at = {
        float(t): (int(r), int(s))
        for t, r, s in zip(line.time, line.ready, line.starting, strict=True)
    }
    assert at[10.0] == (1, 2)
    assert at[14.0] == (1, 2)
    assert at[15.0] == (3, 0)
    # Start-up is paid for: 1 instance for 30 s, 2 more from t = 10.
    assert outcome.instance_seconds == pytest.approx(30 + 2 * 20)


def test_scaling_down_drains_without_losing_a_request() -> None:
    policy = Recorder({20.0: 1}, start=4)
    outcome = simulate([1200.0] * 40, policy, initial=4, model=InstanceModel(default_profile()))
    assert outcome.timeline.ready[-1] == 1
    assert outcome.latency.size + outcome.refused.size > 0
    assert np.all(np.isfinite(outcome.latency))
    # Overloaded after the scale-down: the queue fills and refuses, it never drops.
    assert outcome.refused.size > 0


def test_the_policy_sees_a_consistent_snapshot_every_tick() -> None:
    policy = Recorder({5.0: 3})
    profile = ServiceProfile(sizes=(1, 32), seconds=(0.004, 0.064))
    model = InstanceModel(profile, startup_time=2.0, service_cv=0.0)
    simulate([150.0] * 20, policy, model=model)
    times = [now for now, _ in policy.seen]
    assert times == [float(t) for t in range(1, 21)]
    by_time = dict(policy.seen)
    assert (by_time[5.0].ready, by_time[5.0].starting) == (1, 0)
    assert (by_time[6.0].ready, by_time[6.0].starting) == (1, 2)
    assert (by_time[8.0].ready, by_time[8.0].starting) == (3, 0)
    rates = [snap.arrival_rate for _, snap in policy.seen]
    assert np.mean(rates) == pytest.approx(150.0, rel=0.1)
    late = by_time[15.0]
    assert late.service_time == pytest.approx(0.004, rel=0.3)  # mostly batches of 1
    assert 0.0 < late.cpu < 1.0
    assert late.startup_time == 2.0
    assert late.p99_latency == pytest.approx(0.004, rel=0.5)


def test_limits_apply_to_what_the_policy_asks() -> None:
    limits = Limits(max_instances=3, down_cooldown=0.0)
    outcome = simulate([100.0] * 20, Recorder({2.0: 10}), limits=limits)
    assert outcome.timeline.desired.max() == 10
    assert (outcome.timeline.ready + outcome.timeline.starting).max() == 3
