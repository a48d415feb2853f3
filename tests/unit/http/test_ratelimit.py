from __future__ import annotations

import pytest

from dlproxy.clock import ManualClock
from dlproxy.errors import RateLimited
from dlproxy.http.ratelimit import RateLimiter


def test_a_burst_is_allowed_then_the_rate_applies() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=10, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("alice")
    with pytest.raises(RateLimited) as refused:
        limiter.check("alice")
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    limiter.check("alice")
    with pytest.raises(RateLimited):
        limiter.check("alice")


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock())
    limiter.check("alice")
    limiter.check("bob")
    with pytest.raises(RateLimited):
        limiter.check("alice")


def test_the_table_is_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock(), max_keys=10)
    for i in range(100):
        limiter.check(f"client {i}")
    limiter.check("client 0")  # forgotten, so it starts with a full bucket again
