"""Two pure rules that keep failures from spreading: outlier ejection and the retry budget.

``OutlierDetector`` takes an instance out of rotation after consecutive failures, for longer each
time (Envoy's outlier detection), as long as its pool's cap allows (``ejection_allowed``: correlated
failures must not eject every instance); below a share of healthy instances the pool routes to
all of them (``panicking``). ``RetryBudget`` lets retries go only while they are a small share
of recent requests (Finagle's and Envoy's retry budgets), so retries cannot multiply an outage.
Both read an injected Clock and do no I/O; the instance and the gateway own the timing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dlproxy.clock import Clock, MonotonicClock


@dataclass(frozen=True, slots=True)
class OutlierStatistics:
    consecutive_failures: int
    ejections: int
    """Times the instance was ejected since it joined."""
    ejected: bool
    ejected_for: float
    """Seconds of ejection left (0 when not ejected)."""


class OutlierDetector:
    """Ejects an instance after ``failures`` consecutive failures, for ``base_ejection`` x the
    number of recent ejections (at most ``max_ejection``).

    The failure streak is not reset by an ejection: an instance that comes back and fails once
    more is ejected again at once (it is on probation until a success), for longer. The multiplier
    decays by one for every ``decay`` seconds spent back in rotation, so an instance that had one
    bad spell long ago starts again from ``base_ejection``.
    """

    def __init__(
        self,
        clock: Clock,
        failures: int = 5,
        base_ejection: float = 1.0,
        max_ejection: float = 30.0,
        decay: float = 10.0,
        may_eject: Callable[[], bool] = lambda: True,
    ) -> None:
        if failures < 1:
            raise ValueError(f"outlier failures must be >= 1, got {failures}")
        if base_ejection <= 0 or max_ejection < base_ejection:
            raise ValueError(
                f"ejection times must satisfy 0 < base ({base_ejection}) <= max ({max_ejection})"
            )
        self.clock = clock
        self.failures = failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.decay = decay
        self.may_eject = may_eject  # the pool's cap on how many of its instances are out at once
        self.ejections = 0
        self._streak = 0
        self._multiplier = 0
        self._until = -math.inf

    def ejected(self) -> bool:
        return self.clock.now() < self._until

    def success(self) -> None:
        self._streak = 0

    def failure(self) -> bool:
        """Count one failure; True when it ejects the instance (False while already ejected)."""
        self._streak += 1
        now = self.clock.now()
        if now < self._until or self._streak < self.failures or not self.may_eject():
            return False  # a capped ejection is tried again at the next failure
        if self._multiplier:
            back_for = now - self._until
            self._multiplier = max(0, self._multiplier - int(back_for // self.decay))
        self._multiplier += 1
        self._until = now + min(self.base_ejection * self._multiplier, self.max_ejection)
        self.ejections += 1
        return True

    def statistics(self) -> OutlierStatistics:
        left = max(0.0, self._until - self.clock.now())
        return OutlierStatistics(self._streak, self.ejections, left > 0, left)


@dataclass(slots=True)
class _Bucket:
    start: float
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics:
    requests: int
    """Requests counted in the current window."""
    retries: int
    """Retries allowed in the current window."""
    denied: int
    """Retries refused since the budget was made."""


class RetryBudget:
    """Allows a retry while retries stay within ``ratio`` of the requests of the last ``window``
    seconds, plus ``min_per_second`` x ``window`` so that a quiet service can still retry.

    Defaults are Finagle's (20 %, 10/s, 10 s). The window slides in ``buckets`` steps: what was
    counted more than ``window`` seconds ago no longer counts, so the budget refills by itself.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        buckets: int = 10,
    ) -> None:
        if ratio < 0 or min_per_second < 0 or window <= 0 or buckets < 1:
            raise ValueError(
                f"invalid retry budget: ratio {ratio}, min_per_second {min_per_second}, "
                f"window {window}, buckets {buckets}"
            )
        self.clock = clock or MonotonicClock()
        self.ratio = ratio
        self.reserve = min_per_second * window
        self.window = window
        self._width = window / buckets
        self._buckets: deque[_Bucket] = deque()  # oldest first
        self._requests = 0
        self._retries = 0
        self.denied = 0

    def deposit(self) -> None:
        """Count one request (not a retry): each one earns ``ratio`` of a retry."""
        self._current().requests += 1
        self._requests += 1

    def allow(self) -> bool:
        """True, counting the retry, if the budget has room for one more; else False."""
        bucket = self._current()
        if self._retries + 1 > self.ratio * self._requests + self.reserve:
            self.denied += 1
            return False
        bucket.retries += 1
        self._retries += 1
        return True

    def _current(self) -> _Bucket:
        """The bucket of now, after dropping those that slid out of the window."""
        now = self.clock.now()
        while self._buckets and self._buckets[0].start <= now - self.window:
            old = self._buckets.popleft()
            self._requests -= old.requests
            self._retries -= old.retries
        if not self._buckets or now >= self._buckets[-1].start + self._width:
            self._buckets.append(_Bucket(now - now % self._width))
        return self._buckets[-1]

    def statistics(self) -> RetryBudgetStatistics:
        self._current()
        return RetryBudgetStatistics(self._requests, self._retries, self.denied)


MAX_EJECTION_PERCENT = 10.0
"""Envoy's default: at most this share of a pool's instances is ejected at once (at least one)."""
PANIC_PERCENT = 50.0
"""Envoy's default: below this share of healthy instances, a pool routes to all of them."""


def ejection_allowed(ejected: int, total: int, percent: float = MAX_EJECTION_PERCENT) -> bool:
    """Whether one more of ``total`` instances may be ejected while ``ejected`` are: up to
    ``percent`` of them, and always one (as Envoy does), so a pool of two can still eject."""
    return ejected < max(1, int(total * percent / 100))


def panicking(healthy: int, total: int, percent: float = PANIC_PERCENT) -> bool:
    """Whether so few instances are healthy that health checks are more likely wrong than the
    instances (Envoy's panic threshold): then every instance gets traffic again."""
    return total > 0 and healthy * 100 < total * percent
