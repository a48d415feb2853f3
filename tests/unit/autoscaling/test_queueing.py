from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.queueing import erlang_c, fewest_servers, latency_quantile, service_time

MakeSnapshot = Callable[..., Snapshot]


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.6) == pytest.approx(0.6)  # M/M/1: an arrival waits with chance rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(3, 3.0) == 1.0  # unstable: everyone waits


def test_mm1_quantile_has_the_closed_form() -> None:
    rate, service = 80.0, 0.01  # rho 0.8, the queue drains at 20/s
    expected = math.log(0.8 / 0.01) / 20.0 + service
    assert latency_quantile(1, rate, service, 0.99, cs2=1.0) == pytest.approx(expected)


def test_less_variable_service_waits_less() -> None:
    exponential = latency_quantile(3, 250.0, 0.01, cs2=1.0)
    deterministic = latency_quantile(3, 250.0, 0.01, cs2=0.0)
    assert deterministic - 0.01 == pytest.approx((exponential - 0.01) / 2)


def test_overload_is_infinite_and_more_servers_never_hurt() -> None:
    assert latency_quantile(2, 300.0, 0.01) == math.inf
    values = [latency_quantile(c, 300.0, 0.01) for c in range(4, 12)]
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(0.01, abs=1e-3)


@pytest.mark.parametrize(
    ("rate", "service", "slo"),
    [(200, 0.02, 0.05), (1500, 0.0025, 0.1), (40, 0.1, 0.3), (3000, 0.004, 0.02)],
)
def test_fewest_servers_is_the_first_that_meets_the_slo(
    rate: float, service: float, slo: float
) -> None:
    servers = fewest_servers(rate, service, slo, 0.99, cs2=1.0)
    assert latency_quantile(servers, rate, service, 0.99, cs2=1.0) <= slo
    assert servers == 1 or latency_quantile(servers - 1, rate, service, 0.99, cs2=1.0) > slo


def test_fewest_servers_caps_utilisation_and_needs_a_load() -> None:
    assert fewest_servers(1000.0, 0.01, slo=10.0, max_utilisation=0.5) == 20
    assert fewest_servers(0.0, 0.01, 0.1) == 1
    assert fewest_servers(100.0, 0.0, 0.1) == 1
    assert fewest_servers(100.0, 0.01, slo=0.005, limit=50) == 50  # unreachable: the cap


def test_service_time_is_measured_or_inferred_from_cpu(make_snapshot: MakeSnapshot) -> None:
    assert service_time(make_snapshot(service_time=0.004)) == 0.004
    inferred = make_snapshot(service_time=0.0, ready=2, cpu=0.5, arrival_rate=250.0)
    assert service_time(inferred) == pytest.approx(0.004)  # 2 x 0.5 busy / 250 req/s
    assert service_time(make_snapshot(service_time=0.0, cpu=0.0, arrival_rate=10.0)) == 0.0
