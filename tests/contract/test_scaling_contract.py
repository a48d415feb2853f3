"""The suite every registered scaling policy must pass, whatever it scales on."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from dlproxy.autoscaling.base import POLICIES, ScalingPolicy, Snapshot, create_policy
from dlproxy.clock import ManualClock
from dlproxy.plugins import import_from_string

SERVICE_TIME = 0.0025  # seconds per request: 400 req/s per instance at full use


def snapshot(
    ready: int = 2,
    rate: float = 0.0,
    queued: int = 0,
    inflight: int = 0,
    cpu: float | None = None,
    service_time: float = SERVICE_TIME,
    starting: int = 0,
) -> Snapshot:
    """A pool as a controller would see it; CPU follows from the rate unless given."""
    if cpu is None:
        cpu = min(1.0, rate * service_time / ready) if ready and service_time else 0.0
    return Snapshot(
        model="m",
        ready=ready,
        starting=starting,
        inflight=inflight,
        queued=queued,
        arrival_rate=rate,
        service_time=service_time,
        cpu=cpu,
        memory=0.2,
        p99_latency=0.0,
        startup_time=3.0,
    )


def drive(
    policy: ScalingPolicy,
    make: Callable[[int], Snapshot],
    seconds: int,
    clock: ManualClock,
    start: int = 2,
    step: float = 1.0,
) -> list[int]:
    """Tick ``policy`` as a controller would, acting on its answer at once (ready at once)."""
    count, answers = start, []
    for _ in range(int(seconds / step)):
        clock.advance(step)
        count = policy.desired(make(count), clock.now())
        answers.append(count)
    return answers


@pytest.fixture(params=sorted(POLICIES))
def policy(request: pytest.FixtureRequest) -> ScalingPolicy:
    return create_policy(request.param)


def test_answers_a_positive_int_under_load(policy: ScalingPolicy) -> None:
    clock = ManualClock()
    for n in range(30):
        clock.advance(1.0)
        answer = policy.desired(snapshot(rate=300.0 + 10 * n, inflight=2, queued=n % 3), n)
        assert isinstance(answer, int)
        assert answer >= 1


@pytest.mark.parametrize("service_time", [0.0, SERVICE_TIME])
def test_zero_load_and_unknown_service_time_never_raise(
    policy: ScalingPolicy, service_time: float
) -> None:
    for n in range(20):
        cases = [
            snapshot(rate=0.0, service_time=service_time, cpu=0.0),
            snapshot(ready=0, starting=2, rate=0.0, service_time=service_time),
            snapshot(ready=0, starting=0, rate=50.0, service_time=service_time, cpu=0.0),
            snapshot(rate=500.0, queued=40, service_time=service_time, cpu=0.0),
        ]
        for case in cases:
            answer = policy.desired(case, float(n))
            assert isinstance(answer, int)
            assert answer >= 1


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_same_inputs_give_the_same_answers(name: str) -> None:
    def run() -> list[int]:
        policy, clock = create_policy(name), ManualClock()
        rates = [200, 400, 900, 1500, 1500, 1600, 800, 300, 0, 0, 250] * 10
        answers = []
        for n, rate in enumerate(rates):
            clock.advance(0.5 + (n % 3))
            answers.append(policy.desired(snapshot(rate=rate, queued=n % 7), clock.now()))
        return answers

    assert run() == run()


def overloaded(count: int, rate: float = 2000.0) -> Snapshot:
    """``rate`` against ``count`` instances: queues grow and CPU is pinned until there are enough."""
    if count * 1.0 / SERVICE_TIME <= rate:
        return snapshot(ready=count, rate=rate, queued=100 * count, inflight=32 * count, cpu=1.0)
    return snapshot(ready=count, rate=rate, inflight=math.ceil(rate * SERVICE_TIME))


def test_scales_up_under_sustained_overload(policy: ScalingPolicy) -> None:
    clock = ManualClock()
    answers = drive(policy, lambda _: overloaded(2), 60, clock)  # the pool has not grown yet
    assert max(answers) > 2
    answers = drive(policy, overloaded, 120, clock)
    assert answers[-1] > 2000.0 * SERVICE_TIME  # enough to keep up, in the end
    assert answers[-1] < 64  # and not without bound


def test_scales_down_when_idle_for_long(policy: ScalingPolicy) -> None:
    clock = ManualClock()
    busy = lambda count: snapshot(ready=count, rate=1500.0, inflight=8, queued=4)  # noqa: E731
    drive(policy, busy, 120, clock, start=6)
    idle = lambda count: snapshot(ready=count, rate=0.0, cpu=0.0)  # noqa: E731
    answers = drive(policy, idle, 600, clock, start=6)
    assert answers[-1] == 1


def test_copes_with_irregular_ticks(policy: ScalingPolicy) -> None:
    clock = ManualClock()
    gaps = [1.0, 0.2, 3.0, 0.0, 1.0, 17.0, 0.5, 120.0, 1.0, 1e-6, 1.0, 600.0]
    answers = []
    for n, gap in enumerate(gaps * 3):
        clock.advance(gap)
        answers.append(policy.desired(snapshot(rate=800.0, inflight=3, queued=n % 4), clock.now()))
    assert all(isinstance(a, int) and 1 <= a < 1000 for a in answers)
    # After a long quiet gap a sustained load still gets capacity for it.
    clock.advance(3600.0)
    answers = drive(policy, overloaded, 30, clock)
    assert answers[-1] > 2


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_create_policy_builds_the_registered_class(name: str) -> None:
    policy = create_policy(name)
    assert type(policy) is import_from_string(POLICIES[name])


def test_create_policy_rejects_an_unknown_name_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        create_policy("nope")
    for name in POLICIES:
        assert name in str(info.value)
