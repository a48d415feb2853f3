"""Outlier ejection and the retry budget, driven by a manual clock; the gateway obeys the budget."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from dlproxy.clock import ManualClock
from dlproxy.errors import InstanceFailed
from dlproxy.gateway import Gateway, Limits
from dlproxy.instances.health import (
    OutlierDetector,
    RetryBudget,
    RetryBudgetStatistics,
    ejection_allowed,
    panicking,
)
from dlproxy.types import InferenceRequest, ModelSpec


def fail(detector: OutlierDetector, times: int) -> list[bool]:
    return [detector.failure() for _ in range(times)]


def test_ejects_after_k_consecutive_failures_and_returns_after_the_base_time() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock, failures=5, base_ejection=1.0)
    assert fail(detector, 5) == [False, False, False, False, True]
    assert detector.ejected()
    clock.advance(0.99)
    assert detector.ejected()
    clock.advance(0.02)
    assert not detector.ejected()
    assert detector.ejections == 1


def test_a_success_resets_the_streak() -> None:
    detector = OutlierDetector(ManualClock(), failures=3)
    fail(detector, 2)
    detector.success()
    assert fail(detector, 2) == [False, False]
    assert not detector.ejected()
    assert detector.failure()


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock, failures=2, base_ejection=1.0)
    fail(detector, 2)
    clock.advance(0.5)
    assert fail(detector, 10) == [False] * 10  # late answers of requests sent before
    clock.advance(0.51)
    assert not detector.ejected()


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock, failures=5, base_ejection=1.0, max_ejection=3.0)
    fail(detector, 5)
    lengths = []
    for _ in range(5):
        lengths.append(detector.statistics().ejected_for)
        clock.advance(lengths[-1])
        assert not detector.ejected()
        # Back on probation: no success yet, so one more failure ejects again.
        assert detector.failure()
    assert lengths == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert detector.ejections == 6


def test_the_multiplier_decays_while_the_instance_stays_in() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock, failures=1, base_ejection=1.0, decay=10.0)
    detector.failure()
    clock.advance(1.0)
    detector.failure()
    assert detector.statistics().ejected_for == 2.0
    clock.advance(2.0 + 10.0)  # one decay period back in rotation
    detector.success()
    detector.failure()
    assert detector.statistics().ejected_for == 2.0  # 2 -> 1 by decay, +1 for this ejection
    clock.advance(2.0 + 100.0)
    detector.failure()
    assert detector.statistics().ejected_for == 1.0  # long forgotten: from the base again


@pytest.mark.parametrize(
    ("failures", "base", "cap"), [(0, 1.0, 30.0), (5, 0.0, 30.0), (5, 2.0, 1.0)]
)
def test_bad_settings_are_refused(failures: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        OutlierDetector(ManualClock(), failures, base, cap)


def retries_allowed(budget: RetryBudget, most: int = 10_000) -> int:
    allowed = 0
    while allowed < most and budget.allow():
        allowed += 1
    return allowed


def test_a_quiet_service_gets_the_minimum_only() -> None:
    budget = RetryBudget(ManualClock(), ratio=0.2, min_per_second=1.0, window=10.0)
    assert retries_allowed(budget) == 10
    assert budget.statistics().denied == 1


def test_retries_are_limited_to_a_share_of_requests_plus_the_minimum() -> None:
    budget = RetryBudget(ManualClock(), ratio=0.2, min_per_second=1.0, window=10.0)
    for _ in range(1000):
        budget.deposit()
    assert retries_allowed(budget) == 200 + 10
    for _ in range(5):  # each request earns a fifth of a retry
        budget.deposit()
    assert retries_allowed(budget) == 1


def test_the_budget_refills_as_the_window_slides() -> None:
    clock = ManualClock()
    budget = RetryBudget(clock, ratio=0.2, min_per_second=1.0, window=10.0, buckets=10)
    for _ in range(100):
        budget.deposit()
    assert retries_allowed(budget) == 30
    clock.advance(5.0)
    assert retries_allowed(budget) == 0  # the retries are still inside the window
    clock.advance(5.0)
    # The requests and retries of t=0 slid out: only the minimum is left, and it is all free.
    assert budget.statistics().requests == 0
    assert retries_allowed(budget) == 10


def test_the_window_slides_bucket_by_bucket() -> None:
    clock = ManualClock()
    budget = RetryBudget(clock, ratio=1.0, min_per_second=0.0, window=10.0, buckets=10)
    for _ in range(10):  # one request per second, at t = 0 .. 9
        budget.deposit()
        clock.advance(1.0)
    assert budget.statistics().requests == 9  # t = 10: the request of t = 0 slid out
    clock.advance(4.0)
    assert budget.statistics().requests == 5


def test_an_outage_cannot_retry_every_request() -> None:
    """Half of 100 requests/s fail for 30 s: retries stay near 20 % of requests + 10/s."""
    clock = ManualClock()
    budget = RetryBudget(clock)  # 20 %, 10/s, 10 s
    failed = granted = 0
    for _ in range(1500):  # two requests every 20 ms, one of them fails
        budget.deposit()
        budget.deposit()
        failed += 1
        granted += budget.allow()
        clock.advance(0.02)
    assert failed == 1500
    assert 0.2 * 3000 <= granted <= 0.2 * 3000 + 10 * 30


class FailingInstance:
    """An instance whose every request fails as if it had died."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.calls = 0

    def submit(self, request: InferenceRequest, parameters: dict[str, Any]) -> asyncio.Future[Any]:
        self.calls += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(InstanceFailed(f"{self.id} is gone"))
        return future


class FakePool:
    name = "m"
    version = ""
    spec = ModelSpec("m", "1", "python", (), (), 0)

    def __init__(self, *instances: FailingInstance) -> None:
        self.instances = instances

    def choose(
        self, request: InferenceRequest, exclude: frozenset[str] = frozenset()
    ) -> FailingInstance:
        return next(i for i in self.instances if i.id not in exclude)


async def test_the_gateway_stops_retrying_when_the_budget_is_spent() -> None:
    a, b, c = FailingInstance("a"), FailingInstance("b"), FailingInstance("c")
    budget = RetryBudget(ManualClock(), ratio=0.0, min_per_second=0.1, window=10.0)  # 1 retry
    gateway = Gateway(
        [FakePool(a, b, c)], Limits(max_attempts=3), coalesce=False, retry_budget=budget
    )  # type: ignore[list-item]
    request = InferenceRequest("m", {"x": np.zeros((1, 1), dtype=np.float32)})
    with pytest.raises(InstanceFailed):
        await gateway.infer(request)
    assert (a.calls, b.calls, c.calls) == (1, 1, 0)  # one retry, then the budget said no
    with pytest.raises(InstanceFailed):
        await gateway.infer(request)
    assert (a.calls, b.calls, c.calls) == (2, 1, 0)
    assert budget.statistics() == RetryBudgetStatistics(requests=2, retries=1, denied=2)
    assert sum(gateway.retries.values()) == 1


def test_the_pools_cap_holds_an_ejection_back_until_it_allows_one() -> None:
    clock = ManualClock()
    allowed = False
    detector = OutlierDetector(clock, failures=2, may_eject=lambda: allowed)
    assert not detector.failure() and not detector.failure()  # the streak is there; the cap no
    assert not detector.ejected()
    allowed = True
    assert detector.failure() and detector.ejected()  # the next failure ejects


def test_at_most_a_tenth_of_a_pool_is_ejected_but_always_one() -> None:
    assert ejection_allowed(0, 2) and not ejection_allowed(1, 2)
    assert ejection_allowed(1, 20) and not ejection_allowed(2, 20)


def test_a_pool_with_fewer_than_half_healthy_panics() -> None:
    assert panicking(1, 3) and panicking(0, 2)
    assert not panicking(2, 4) and not panicking(1, 1) and not panicking(0, 0)
