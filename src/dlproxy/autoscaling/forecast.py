"""Holt's linear trend, fitted online: where the arrival rate is heading, for scaling ahead of it.

A new instance is useful only after its start-up, so a policy must size the pool for the load at
``now + startup``, not for the load now. Double exponential smoothing tracks a level and a slope
in O(1) per sample, needs no history and no fitting step, and follows a ramp without the lag of
a plain moving average. Samples may come at irregular intervals: the smoothing factors are scaled
to the time since the previous sample, so a late tick weighs as much as the ticks it stands for.
"""

from __future__ import annotations


class Holt:
    """Level and trend (per second) of a noisy series, e.g. requests per second each tick.

    ``alpha`` and ``beta`` are the smoothing factors for one ``interval`` (seconds) between
    samples: higher follows changes faster and the noise more.
    """

    __slots__ = ("_at", "alpha", "beta", "interval", "level", "trend")

    def __init__(self, alpha: float = 0.5, beta: float = 0.1, interval: float = 1.0) -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"Holt '{name}' must be in (0, 1] (got {value}).")
        if interval <= 0:
            raise ValueError(f"Holt 'interval' must be positive (got {interval}).")
        self.alpha = alpha
        self.beta = beta
        self.interval = interval
        self.level = 0.0
        self.trend = 0.0
        self._at: float | None = None

    @property
    def fitted(self) -> bool:
        """Whether any sample has been seen."""
        return self._at is not None

    def update(self, now: float, value: float) -> None:
        """Take the sample ``value`` observed at ``now``; a sample at an earlier time is ignored."""
        if self._at is None:
            self.level, self._at = value, now
            return
        dt = now - self._at
        if dt <= 0:
            return
        steps = dt / self.interval
        alpha = 1.0 - (1.0 - self.alpha) ** steps
        beta = 1.0 - (1.0 - self.beta) ** steps
        previous = self.level
        self.level = alpha * value + (1.0 - alpha) * (previous + self.trend * dt)
        self.trend = beta * (self.level - previous) / dt + (1.0 - beta) * self.trend
        self._at = now

    def forecast(self, horizon: float) -> float:
        """The value expected ``horizon`` seconds after the last sample (never below zero)."""
        return max(0.0, self.level + self.trend * horizon)

    def peak(self, horizon: float) -> float:
        """The most the series is expected to reach within ``horizon`` seconds: what to provision.

        With a falling trend that is the level now: instances must serve the present until the
        decline arrives.
        """
        return max(0.0, self.level, self.forecast(horizon))
