from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.cost import Cost
from dlproxy.autoscaling.queueing import fewest_servers, latency_quantile

MakeSnapshot = Callable[..., Snapshot]


def steady(policy: Cost, make: MakeSnapshot, rate: float, service: float) -> int:
    """The answer once the rate has been seen for a while."""
    for t in range(60):
        answer = policy.desired(make(arrival_rate=rate, service_time=service), float(t))
    return answer


def model_only(**options: float) -> Cost:
    return Cost(use_forecast=False, max_utilisation=1.0, **options)


@pytest.mark.parametrize(
    ("rate", "service", "slo"),
    [(200.0, 0.02, 0.05), (1500.0, 0.0025, 0.1), (40.0, 0.1, 0.3), (900.0, 0.004, 0.02)],
)
def test_picks_the_fewest_instances_that_meet_the_slo_per_the_model(
    make_snapshot: MakeSnapshot, rate: float, service: float, slo: float
) -> None:
    policy = model_only(slo=slo, cs2=1.0)
    count = steady(policy, make_snapshot, rate, service)
    assert count == fewest_servers(rate, service, slo, 0.99, cs2=1.0)
    assert latency_quantile(count, rate, service, 0.99, cs2=1.0) <= slo
    assert latency_quantile(count - 1, rate, service, 0.99, cs2=1.0) > slo


def test_a_tighter_slo_needs_more_instances(make_snapshot: MakeSnapshot) -> None:
    counts = [steady(model_only(slo=slo), make_snapshot, 200.0, 0.02) for slo in (1.0, 0.05, 0.025)]
    assert counts[0] < counts[1] < counts[2]


def test_a_longer_service_time_needs_more_instances(make_snapshot: MakeSnapshot) -> None:
    counts = [steady(model_only(slo=0.2), make_snapshot, 200.0, s) for s in (0.01, 0.02, 0.05)]
    assert counts[0] < counts[1] < counts[2]


def test_a_higher_quantile_needs_at_least_as_many(make_snapshot: MakeSnapshot) -> None:
    p90 = steady(model_only(slo=0.05, quantile=0.9), make_snapshot, 200.0, 0.02)
    p999 = steady(model_only(slo=0.05, quantile=0.999), make_snapshot, 200.0, 0.02)
    assert p999 > p90


def test_the_forecast_sizes_for_where_a_ramp_is_going(make_snapshot: MakeSnapshot) -> None:
    with_forecast, without = Cost(), Cost(use_forecast=False)
    for t in range(120):
        snapshot = make_snapshot(arrival_rate=100.0 + 50.0 * t, service_time=0.01)
        ahead = with_forecast.desired(snapshot, float(t))
        now = without.desired(snapshot, float(t))
    assert ahead > now


def test_the_budget_caps_the_spend(make_snapshot: MakeSnapshot) -> None:
    policy = Cost(cost_per_hour=2.5, budget_per_hour=10.0)
    assert steady(policy, make_snapshot, 5000.0, 0.0025) == 4  # 10 / 2.5 per hour


def test_no_load_needs_one_instance(make_snapshot: MakeSnapshot) -> None:
    assert steady(Cost(), make_snapshot, 0.0, 0.0025) == 1


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="quantile"):
        Cost(quantile=1.0)
    with pytest.raises(ValueError, match="slo"):
        Cost(slo=-math.inf)
