from __future__ import annotations

import math
from collections.abc import Callable

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.predictive import Predictive
from dlproxy.clock import ManualClock

MakeSnapshot = Callable[..., Snapshot]
SERVICE = 0.0025
STARTUP = 3.0


def ramp(t: float) -> float:
    """100 req/s for a minute, then +10 req/s every second."""
    return 100.0 + 10.0 * max(0.0, t - 60.0)


def reactive(rate: float, utilisation: float) -> int:
    """What a policy sizing for the rate it sees now would ask for."""
    return max(1, math.ceil(rate * SERVICE / utilisation))


def first_time(answers: list[tuple[float, int]], count: int) -> float:
    return next(t for t, answer in answers if answer >= count)


def test_scales_ahead_of_a_linear_ramp_by_the_startup_time(make_snapshot: MakeSnapshot) -> None:
    policy, clock = Predictive(lead=0.0), ManualClock()
    ahead, behind = [], []
    for _ in range(400):
        clock.advance(1.0)
        now, rate = clock.now(), ramp(clock.now())
        snapshot = make_snapshot(arrival_rate=rate, service_time=SERVICE, startup_time=STARTUP)
        ahead.append((now, policy.desired(snapshot, now)))
        behind.append((now, reactive(rate, policy.target_utilisation)))
    for count in (5, 6, 8):  # reached well into the ramp, once the trend is learnt
        early = first_time(behind, count) - first_time(ahead, count)
        assert STARTUP - 1.0 <= early <= STARTUP + 1.0


def test_lead_adds_to_the_startup_time(make_snapshot: MakeSnapshot) -> None:
    def when(lead: float) -> float:
        policy, clock, answers = Predictive(lead=lead), ManualClock(), []
        for _ in range(400):
            clock.advance(1.0)
            snapshot = make_snapshot(arrival_rate=ramp(clock.now()), service_time=SERVICE)
            answers.append((clock.now(), policy.desired(snapshot, clock.now())))
        return first_time(answers, 10)

    assert when(0.0) - when(4.0) == 4.0


def test_a_steady_rate_gets_target_utilisation(make_snapshot: MakeSnapshot) -> None:
    policy = Predictive(target_utilisation=0.5)
    for t in range(100):
        answer = policy.desired(make_snapshot(arrival_rate=800.0, service_time=SERVICE), t)
    assert answer == 4  # 800 req/s x 2.5 ms = 2 busy instances, at 50% each


def test_a_backlog_asks_for_capacity_to_clear_it(make_snapshot: MakeSnapshot) -> None:
    calm, backlogged = Predictive(), Predictive()
    for t in range(30):
        a = calm.desired(make_snapshot(arrival_rate=400.0), t)
        b = backlogged.desired(make_snapshot(arrival_rate=400.0, queued=2000), t)
    assert b > a


def test_holds_until_a_service_time_is_known_then_keeps_it(make_snapshot: MakeSnapshot) -> None:
    policy = Predictive()
    unknown = make_snapshot(ready=3, arrival_rate=500.0, service_time=0.0, cpu=0.0)
    assert policy.desired(unknown, 0.0) == 3
    policy.desired(make_snapshot(ready=3, arrival_rate=500.0, service_time=0.004), 1.0)
    # Idle instances report no service time; the last one measured still sizes the pool.
    later = policy.desired(unknown, 2.0)
    assert later == math.ceil(policy.forecast.peak(5.0) * 0.004 / policy.target_utilisation)
